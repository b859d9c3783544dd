#include "data_tools/prepare.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "core/file_io.h"
#include "core/philox.h"
#include "data/shard_format.h"
#include "data_tools/inputs.h"
#include "data_tools/pipeline.h"
#include "data_tools/progress.h"
#include "data_tools/records.h"
#include "data_tools/shard_sink.h"
#include "tokenizer/tokenizer.h"

namespace moe::data {

namespace {

namespace fs = std::filesystem;

// A batch is cut after this many bytes or records: big enough to keep the
// locks cold, small enough that (2 x threads + 2) batches stay a few MB.
constexpr size_t kBatchBytes = 256 << 10;
constexpr size_t kBatchRecords = 4096;

void encode_batch(Batch& b, const Tokenizer& tok, const std::string& text_field) {
  std::vector<int> ids;
  std::string doc;
  for (auto& r : b.records) {
    std::string_view text(b.text.data() + r.offset, r.size);
    if (r.json) {
      if (!jsonl_text(text, text_field, &doc, &r.why)) {
        r.status = Batch::Record::Status::Bad;
        continue;
      }
      text = doc;
    }
    if (text.empty()) {
      r.status = Batch::Record::Status::Empty;
      continue;
    }
    r.hash = document_hash(text);
    const auto st = tok.sp->Encode(text, &ids);
    if (!st.ok()) throw InternalError(std::string("SentencePiece encode failed: ") + st.message());
    b.text_bytes += text.size();
    b.tokens.insert(b.tokens.end(), ids.begin(), ids.end());
    b.tokens.push_back(uint32_t(tok.eos_id));
    r.tokens = ids.size() + 1;
  }
  std::string().swap(b.text);  // only the tokens wait for the writer
}

nlohmann::ordered_json split_json(const SplitWriter& w) {
  nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  for (const auto& s : w.shards())
    shards.push_back({{"file", s.file}, {"tokens", s.tokens}, {"documents", s.documents}});
  return {{"documents", w.documents()}, {"tokens", w.tokens()}, {"shards", shards}};
}

std::string shard_count(size_t n) { return n == 1 ? "1 shard" : std::to_string(n) + " shards"; }

}  // namespace

uint64_t document_hash(std::string_view text) { return stable_hash(text); }

bool is_val_document(uint64_t seed, uint64_t doc_hash, double val_fraction) {
  // Philox keyed by the seed mixes FNV-1a's weak low bits into a uniform draw.
  static const uint64_t stream = stable_hash("moe-data/val-split");
  return uniform_from_bits(philox_bits(seed, stream, doc_hash)[0]) <= val_fraction;
}

void prepare(const PrepareOptions& o) {
  const Tokenizer tok = load_tokenizer(o.tokenizer);
  const auto files = expand_inputs(o.inputs);
  OutputDir out(o.output, o.force);
  uint64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += f.bytes;
  const int threads =
      o.threads > 0 ? o.threads : std::max(1, int(std::thread::hardware_concurrency()));

  ShardHeader header;
  header.token_bytes = token_bytes_for_vocab(tok.vocab_size);
  header.vocab_size = tok.vocab_size;
  header.bos_id = tok.bos_id;
  header.eos_id = tok.eos_id;
  header.pad_id = tok.pad_id;
  header.tokenizer_hash = tok.hash;
  SplitWriter train(out.staging(), "train", header, o.shard_tokens);
  SplitWriter val(out.staging(), "val", header, o.shard_tokens);

  RecordReader reader(files, o.whole_file_docs);
  auto produce = [&](Batch& b) {
    RawRecord r;
    while (b.text.size() < kBatchBytes && b.records.size() < kBatchRecords && reader.next(&r)) {
      Batch::Record rec;
      rec.offset = b.text.size();
      rec.size = r.text.size();
      rec.file = r.file;
      rec.line = r.line;
      rec.json = r.json;
      b.text.append(r.text);
      b.records.push_back(std::move(rec));
    }
    b.disk_bytes = reader.disk_bytes();
    return !b.records.empty();
  };
  auto work = [&](Batch& b) { encode_batch(b, tok, o.text_field); };

  Progress progress("prepare", total_bytes, "docs", true);
  uint64_t docs = 0, disk_bytes = 0, text_bytes = 0, bad_lines = 0, empty_docs = 0;
  std::vector<uint64_t> file_docs(files.size(), 0), file_val_docs(files.size(), 0);
  std::string first_bad;
  {
    OrderedPipeline pipe(threads, size_t(2 * threads + 2), produce, work);
    Batch b;
    while (pipe.next(&b)) {
      size_t at = 0;
      for (const auto& r : b.records) {
        if (r.status == Batch::Record::Status::Bad) {
          const std::string& path = files[r.file].path;
          if (!o.skip_bad_lines) throw DataError(bad_line_message(path, r.line, r.why));
          if (bad_lines++ == 0) first_bad = path + ":" + std::to_string(r.line) + ": " + r.why;
          continue;
        }
        if (r.status == Batch::Record::Status::Empty) {
          ++empty_docs;
          continue;
        }
        const bool to_val = is_val_document(o.seed, r.hash, o.val_fraction);
        ++docs;
        ++file_docs[r.file];
        file_val_docs[r.file] += to_val;
        (to_val ? val : train).add_document(b.tokens.data() + at, r.tokens);
        at += r.tokens;
      }
      disk_bytes = b.disk_bytes;
      text_bytes += b.text_bytes;
      progress.update(disk_bytes, docs, train.tokens() + val.tokens());
    }
  }
  progress.finish(disk_bytes, docs, train.tokens() + val.tokens());
  if (docs == 0)
    throw DataError("the inputs hold no documents (" + std::to_string(files.size()) + " files, " +
                    human_bytes(double(total_bytes)) + (bad_lines ? ", every line bad" : "") + ")");
  train.finish();
  val.finish();
  const double seconds = progress.seconds();
  const double mbps = double(disk_bytes) / 1e6 / std::max(seconds, 1e-9);

  nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
  for (size_t i = 0; i < files.size(); ++i)
    inputs.push_back({{"path", files[i].path},
                      {"bytes", files[i].bytes},
                      {"format", files[i].format == Format::Jsonl ? "jsonl" : "txt"},
                      {"gzip", files[i].gzip},
                      {"documents", file_docs[i]},
                      {"val_documents", file_val_docs[i]}});
  std::error_code ec;
  const nlohmann::ordered_json summary = {
      {"version", MOE_VERSION},
      {"documents", docs},
      {"tokens", train.tokens() + val.tokens()},
      {"train", split_json(train)},
      {"val", split_json(val)},
      {"token_bytes", header.token_bytes},
      {"tokenizer",
       {{"path", fs::absolute(o.tokenizer, ec).string()},
        {"hash", fmt::format("{:016x}", tok.hash)},
        {"vocab_size", tok.vocab_size},
        {"unk_id", tok.unk_id},
        {"bos_id", tok.bos_id},
        {"eos_id", tok.eos_id},
        {"pad_id", tok.pad_id}}},
      {"val_fraction", o.val_fraction},
      {"seed", o.seed},
      {"shard_tokens", o.shard_tokens},
      {"txt_docs", o.whole_file_docs ? "file" : "paragraph"},
      {"text_field", o.text_field},
      {"inputs", inputs},
      {"input_bytes", disk_bytes},
      {"text_bytes", text_bytes},
      {"skipped_bad_lines", bad_lines},
      {"first_bad_line",
       bad_lines ? nlohmann::ordered_json(first_bad) : nlohmann::ordered_json(nullptr)},
      {"empty_documents", empty_docs},
      {"threads", threads},
      {"seconds", seconds},
      {"mb_per_s", mbps},
  };
  io::write_file(out.staging() + "/summary.json", summary.dump(2) + "\n");
  out.commit();

  if (bad_lines > 0)
    fmt::print(stderr, "moe-data: warning: skipped {} bad JSONL lines; the first: {}\n", bad_lines,
               first_bad);
  if (o.val_fraction > 0 && val.documents() == 0) {
    fmt::print(stderr,
               "moe-data: warning: no document fell into the validation split ({} "
               "documents, --val-fraction {})\n",
               docs, o.val_fraction);
  } else {
    // A file expected to give 5+ validation documents gives none with
    // probability < e^-5 = 0.7%: its domain is then missing from validation.
    for (size_t i = 0; i < files.size(); ++i)
      if (file_val_docs[i] == 0 && double(file_docs[i]) * o.val_fraction >= 5)
        fmt::print(stderr,
                   "moe-data: warning: {}: none of its {} documents fell into the validation "
                   "split (--val-fraction {}); another --seed changes that\n",
                   files[i].path, file_docs[i], o.val_fraction);
  }
  fmt::print(
      "prepared {} docs, {} tokens: train {} docs {} tokens ({}), val {} docs {} tokens ({}) "
      "| uint{} vocab {} | {} in {:.1f} s, {:.1f} MB/s -> {}\n",
      docs, train.tokens() + val.tokens(), train.documents(), train.tokens(),
      shard_count(train.shards().size()), val.documents(), val.tokens(),
      shard_count(val.shards().size()), header.token_bytes * 8, tok.vocab_size,
      human_bytes(double(disk_bytes)), seconds, mbps, o.output);
}

}  // namespace moe::data
