#include "data/shard_dataset.h"

#include <glob.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/philox.h"

namespace moe {

// Tokens are copied straight out of the little-endian files.
static_assert(std::endian::native == std::endian::little, "shard reader assumes little-endian");

namespace {

// Philox stream of the shard sampler (token_source.cpp uses 0x5EED0001..3).
constexpr uint64_t kStreamShardOffset = 0x5EED0004;

namespace fs = std::filesystem;

// The `<split>_*.bin` regular files of a directory, sorted; empty if none.
std::vector<std::string> list_split(const std::string& dir, const std::string& split) {
  std::vector<std::string> out;
  const std::string prefix = split + "_";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > prefix.size() + 4 && name.rfind(prefix, 0) == 0 &&
        name.compare(name.size() - 4, 4, ".bin") == 0 && it->is_regular_file())
      out.push_back(it->path().string());
  }
  if (ec) throw DataError(dir + ": cannot list directory: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::string width_name(uint32_t token_bytes) { return token_bytes == 2 ? "uint16" : "uint32"; }

// The header fields every shard of a set must share, for error messages.
void check_agree(const ShardHeader& a, const std::string& pa, const ShardHeader& b,
                 const std::string& pb) {
  auto field = [&](const char* name, int64_t va, int64_t vb) {
    if (va != vb)
      throw DataError(pb + ": shard disagrees with " + pa + " on " + name + " (" +
                      std::to_string(vb) + " vs " + std::to_string(va) + ")");
  };
  field("token width", a.token_bytes, b.token_bytes);
  field("vocab_size", a.vocab_size, b.vocab_size);
  field("bos_id", a.bos_id, b.bos_id);
  field("eos_id", a.eos_id, b.eos_id);
  field("pad_id", a.pad_id, b.pad_id);
  if (a.tokenizer_hash != b.tokenizer_hash)
    throw DataError(pb + ": shard disagrees with " + pa +
                    " on tokenizer_hash (written by a different tokenizer)");
}

}  // namespace

std::vector<std::string> resolve_shards(const std::string& spec, const std::string& split) {
  if (spec.empty()) throw DataError("empty shard path (looking for " + split + " shards)");
  std::error_code ec;
  std::vector<std::string> out;
  if (fs::is_directory(spec, ec)) {
    out = list_split(spec, split);
    if (out.empty())
      throw DataError(spec + ": no " + split + "_*.bin shards in this directory");
    return out;
  }
  if (is_glob(spec)) {
    glob_t g{};
    const int rc = ::glob(spec.c_str(), 0, nullptr, &g);  // sorted by name
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (fs::is_regular_file(g.gl_pathv[i], ec)) out.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (rc != 0 && rc != GLOB_NOMATCH) throw DataError(spec + ": glob failed (read error)");
    if (out.empty()) throw DataError(spec + ": no shard file matches (looking for " + split +
                                     " shards)");
    return out;
  }
  if (!fs::exists(spec, ec))
    throw DataError(spec + ": no such shard file or directory (looking for " + split +
                    " shards)");
  return {spec};
}

// ------------------------------------------------------------------ ShardSet

ShardSet::ShardSet(const std::vector<std::string>& paths, int64_t model_vocab,
                   const std::string& spec)
    : spec_(spec) {
  if (paths.empty()) throw DataError(spec + ": no token shards to read");
  for (const std::string& p : paths) {
    MappedFile file(p, "shard");
    static const unsigned char kNone[1] = {};
    const ShardHeader h = decode_shard_header(file.data() ? file.data() : kNone, file.size(), p);
    check_shard_size(h, file.size(), p);
    if (int64_t(h.vocab_size) > model_vocab)
      throw DataError(p + ": shard vocab_size " + std::to_string(h.vocab_size) +
                      " exceeds model.vocab_size " + std::to_string(model_vocab));
    if (shards_.empty()) {
      header_ = h;
      header_.token_count = header_.doc_count = 0;
    } else {
      check_agree(header_, shards_[0].file.path(), h, p);
    }
    shards_.push_back({std::move(file), total_, int64_t(h.token_count)});
    total_ += int64_t(h.token_count);
    header_.token_count += h.token_count;
    header_.doc_count += h.doc_count;
  }
  if (total_ == 0)
    throw DataError(spec + ": the " + std::to_string(shards_.size()) + " shard(s) hold no tokens");
}

std::string ShardSet::describe() const {
  return spec_ + " (" + std::to_string(shards_.size()) + " shard" +
         (shards_.size() == 1 ? "" : "s") + ", " + std::to_string(total_) + " tokens, " +
         std::to_string(header_.doc_count) + " documents, " + width_name(header_.token_bytes) +
         ", vocab " + std::to_string(header_.vocab_size) + ")";
}

void ShardSet::read(int64_t pos, int64_t n, int32_t* out) const {
  MOE_CHECK(pos >= 0 && n >= 0 && pos + n <= total_, "ShardSet::read outside the stream");
  if (n == 0) return;
  // Last shard starting at or before pos (empty shards share a start; the
  // loop below steps over them).
  auto it = std::upper_bound(shards_.begin(), shards_.end(), pos,
                             [](int64_t p, const Shard& s) { return p < s.first; });
  size_t i = size_t(it - shards_.begin()) - 1;
  const uint32_t width = header_.token_bytes, vocab = header_.vocab_size;
  while (n > 0) {
    const Shard& s = shards_[i];
    const int64_t off = pos - s.first;
    const int64_t take = std::min(n, s.count - off);
    if (take > 0) s.file.check_unchanged();
    const unsigned char* src = s.file.data() + kShardHeaderBytes + size_t(off) * width;
    for (int64_t t = 0; t < take; ++t) {
      uint32_t v;
      if (width == 2) {
        uint16_t x;
        std::memcpy(&x, src + 2 * t, 2);
        v = x;
      } else {
        std::memcpy(&v, src + 4 * t, 4);
      }
      // A corrupt token would index past the embedding table; cheap to catch.
      if (v >= vocab)
        throw DataError(s.file.path() + ": token " + std::to_string(v) + " at index " +
                        std::to_string(off + t) + " is outside the shard vocab " +
                        std::to_string(vocab));
      out[t] = int32_t(v);
    }
    out += take;
    pos += take;
    n -= take;
    ++i;
  }
}

// ---------------------------------------------------------- ShardTokenSource

ShardTokenSource::ShardTokenSource(ShardSet shards, uint64_t seed, int seq_len, int global_batch)
    : shards_(std::move(shards)), seed_(seed), seq_len_(seq_len), global_batch_(global_batch) {
  MOE_CHECK(seq_len > 0 && global_batch > 0, "ShardTokenSource: bad seq_len or global_batch");
  if (shards_.total_tokens() < int64_t(seq_len) + 1)
    throw DataError(shards_.describe() + ": holds " + std::to_string(shards_.total_tokens()) +
                    " tokens, fewer than model.seq_len + 1 = " + std::to_string(seq_len + 1));
}

int64_t ShardTokenSource::start(int64_t step, int j) const {
  const uint64_t index = uint64_t(step) * uint64_t(global_batch_) + uint64_t(j);
  const uint64_t starts = uint64_t(shards_.total_tokens() - seq_len_);  // [0, total - (S+1)]
  return int64_t(philox_uniform_int(seed_, kStreamShardOffset, index, starts));
}

void ShardTokenSource::sequence(int64_t step, int j, int32_t* out) const {
  shards_.read(start(step, j), int64_t(seq_len_) + 1, out);
}

std::string ShardTokenSource::describe() const { return "token shards " + shards_.describe(); }

// ---------------------------------------------------------- ValidationReader

ValidationReader::ValidationReader(ShardSet shards, int seq_len)
    : shards_(std::move(shards)), seq_len_(seq_len) {
  MOE_CHECK(seq_len > 0, "ValidationReader: bad seq_len");
  if (shards_.total_tokens() < int64_t(seq_len) + 1)
    throw DataError(shards_.describe() + ": holds " + std::to_string(shards_.total_tokens()) +
                    " tokens, fewer than model.seq_len + 1 = " + std::to_string(seq_len + 1));
  n_seq_ = (shards_.total_tokens() - 1) / seq_len;
}

void ValidationReader::read(int64_t k, int32_t* out) const {
  MOE_CHECK(k >= 0 && k < n_seq_, "ValidationReader::read: sequence out of range");
  shards_.read(k * seq_len_, int64_t(seq_len_) + 1, out);
}

void ValidationReader::batch(int64_t first, int B, int32_t* tokens, int32_t* targets) const {
  MOE_CHECK(first >= 0 && B >= 0 && first + B <= n_seq_,
            "ValidationReader::batch: sequences out of range");
  for (int i = 0; i < B; ++i) {
    const int64_t pos = (first + i) * seq_len_;
    shards_.read(pos, seq_len_, tokens + size_t(i) * seq_len_);
    shards_.read(pos + 1, seq_len_, targets + size_t(i) * seq_len_);
  }
}

std::string ValidationReader::describe() const {
  return "validation shards " + shards_.describe() + ": " + std::to_string(n_seq_) +
         " sequences, " + std::to_string(tokens_skipped()) + " trailing tokens skipped";
}

// ----------------------------------------------------------------- factories

std::unique_ptr<ShardTokenSource> make_shard_source(const Config& cfg) {
  ShardSet set(resolve_shards(cfg.data.path, "train"), cfg.model.vocab_size, cfg.data.path);
  return std::make_unique<ShardTokenSource>(std::move(set), cfg.train.seed, cfg.model.seq_len,
                                            cfg.train.global_batch);
}

std::unique_ptr<ValidationReader> make_validation_reader(const Config& cfg) {
  const DataConfig& d = cfg.data;
  std::vector<std::string> paths;
  std::string spec = d.val_path;
  if (!spec.empty()) {
    paths = resolve_shards(spec, "val");
  } else {
    std::error_code ec;
    if (d.source != DataSource::Shards || d.path.empty() || !fs::is_directory(d.path, ec))
      return nullptr;
    spec = d.path;
    paths = list_split(spec, "val");
    if (paths.empty()) return nullptr;
  }
  return std::make_unique<ValidationReader>(ShardSet(paths, cfg.model.vocab_size, spec),
                                            cfg.model.seq_len);
}

}  // namespace moe
