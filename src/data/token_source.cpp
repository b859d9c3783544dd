#include "data/token_source.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/philox.h"
#include "data/shard_dataset.h"

namespace moe {

namespace {
// Philox streams of the data pipeline (distinct from parameter init streams).
constexpr uint64_t kStreamSyntheticTable = 0x5EED0001;
constexpr uint64_t kStreamSyntheticSeq = 0x5EED0002;
constexpr uint64_t kStreamFileOffset = 0x5EED0003;
}  // namespace

SyntheticSource::SyntheticSource(uint64_t seed, int vocab, int branching, int seq_len,
                                 int global_batch)
    : seed_(seed),
      vocab_(vocab),
      branching_(branching),
      seq_len_(seq_len),
      global_batch_(global_batch),
      successors_(size_t(vocab) * branching) {
  for (size_t i = 0; i < successors_.size(); ++i)
    successors_[i] = int32_t(philox_uniform_int(seed, kStreamSyntheticTable, i, uint64_t(vocab)));
}

void SyntheticSource::sequence(int64_t step, int j, int32_t* out) const {
  const uint64_t base = (uint64_t(step) * global_batch_ + j) * uint64_t(seq_len_ + 1);
  int32_t tok = int32_t(philox_uniform_int(seed_, kStreamSyntheticSeq, base, uint64_t(vocab_)));
  out[0] = tok;
  for (int t = 1; t <= seq_len_; ++t) {
    const uint64_t pick = philox_uniform_int(seed_, kStreamSyntheticSeq, base + t, branching_);
    tok = successors_[size_t(tok) * branching_ + pick];
    out[t] = tok;
  }
}

std::string SyntheticSource::describe() const {
  return "synthetic Markov chain (vocab " + std::to_string(vocab_) + ", branching " +
         std::to_string(branching_) + ")";
}

TokenFileSource::TokenFileSource(const std::string& path, TokenDType dtype, int vocab,
                                 uint64_t seed, int seq_len, int global_batch)
    : path_(path), dtype_(dtype), seed_(seed), seq_len_(seq_len), global_batch_(global_batch),
      file_(path, "token file") {
  const size_t bytes = file_.size();
  const size_t width = dtype == TokenDType::U16 ? 2 : 4;
  if (bytes % width != 0)
    throw DataError(path + ": size " + std::to_string(bytes) + " is not a multiple of " +
                    std::to_string(width) + " bytes (data.dtype " + to_string(dtype) + ")");
  n_tokens_ = int64_t(bytes / width);
  if (n_tokens_ < seq_len + 1)
    throw DataError(path + ": holds " + std::to_string(n_tokens_) +
                    " tokens, fewer than model.seq_len + 1 = " + std::to_string(seq_len + 1));
  // One pass to reject out-of-vocabulary tokens up front rather than mid-run.
  const unsigned char* data = file_.data();
  for (int64_t i = 0; i < n_tokens_; ++i) {
    uint32_t v;
    if (dtype_ == TokenDType::U16) {
      uint16_t x;
      std::memcpy(&x, data + 2 * i, 2);
      v = x;
    } else {
      std::memcpy(&v, data + 4 * i, 4);
    }
    if (v >= uint32_t(vocab))
      throw DataError(path + ": token " + std::to_string(v) + " at position " + std::to_string(i) +
                      " is outside model.vocab_size " + std::to_string(vocab));
  }
}

void TokenFileSource::sequence(int64_t step, int j, int32_t* out) const {
  file_.check_unchanged();
  const unsigned char* data = file_.data();
  const uint64_t index = uint64_t(step) * global_batch_ + j;
  const int64_t start =
      int64_t(philox_uniform_int(seed_, kStreamFileOffset, index, uint64_t(n_tokens_ - seq_len_)));
  for (int t = 0; t <= seq_len_; ++t) {
    if (dtype_ == TokenDType::U16) {
      uint16_t x;
      std::memcpy(&x, data + 2 * (start + t), 2);
      out[t] = int32_t(x);
    } else {
      uint32_t x;
      std::memcpy(&x, data + 4 * (start + t), 4);
      out[t] = int32_t(x);
    }
  }
}

std::string TokenFileSource::describe() const {
  return path_ + " (" + std::to_string(n_tokens_) + " tokens, " + to_string(dtype_) + ")";
}

std::unique_ptr<TokenSource> make_train_source(const Config& cfg) {
  if (cfg.data.source == DataSource::Synthetic)
    return std::make_unique<SyntheticSource>(cfg.train.seed, cfg.model.vocab_size,
                                             cfg.data.synthetic_branching, cfg.model.seq_len,
                                             cfg.train.global_batch);
  if (cfg.data.source == DataSource::Shards) return make_shard_source(cfg);
  return std::make_unique<TokenFileSource>(cfg.data.path, cfg.data.dtype, cfg.model.vocab_size,
                                           cfg.train.seed, cfg.model.seq_len,
                                           cfg.train.global_batch);
}

void check_data_present(const Config& cfg) {
  const DataConfig& d = cfg.data;
  try {
    std::error_code ec;
    if (d.source == DataSource::Tokens && !std::filesystem::exists(d.path, ec))
      throw DataError(d.path + ": no such token file (data.path)");
    if (d.source == DataSource::Shards) resolve_shards(d.path, "train");
    if (!d.val_path.empty()) resolve_shards(d.val_path, "val");
  } catch (const DataError& e) {
    if (d.prepare_hint.empty()) throw;
    throw DataError(std::string(e.what()) + "; this config expects " + d.prepare_hint);
  }
}

BatchSampler::BatchSampler(const TokenSource& src, int seq_len, int global_batch, int micro_batch,
                           int rank, int world)
    : src_(src), seq_len_(seq_len), micro_(micro_batch), per_rank_(global_batch / world),
      first_(rank * (global_batch / world)) {
  MOE_CHECK(global_batch % world == 0 && per_rank_ % micro_batch == 0,
            "BatchSampler: global batch not divisible by world * micro_batch");
}

void BatchSampler::micro_batch(int64_t step, int m, int32_t* tokens, int32_t* targets) const {
  std::vector<int32_t> seq(size_t(seq_len_) + 1);
  for (int i = 0; i < micro_; ++i) {
    src_.sequence(step, first_ + m * micro_ + i, seq.data());
    std::memcpy(tokens + size_t(i) * seq_len_, seq.data(), size_t(seq_len_) * sizeof(int32_t));
    std::memcpy(targets + size_t(i) * seq_len_, seq.data() + 1,
                size_t(seq_len_) * sizeof(int32_t));
  }
}

}  // namespace moe
