#include "data_tools/tokenizer_train.h"

#include <fmt/format.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/philox.h"
#include "data_tools/inputs.h"
#include "data_tools/progress.h"
#include "data_tools/records.h"
#include "tokenizer/tokenizer.h"

namespace moe::data {

namespace {

struct Sample {
  std::vector<std::string> sentences;
  uint64_t seen = 0, seen_bytes = 0;
};

// A uniform sample of at most k lines of the whole corpus (reservoir
// sampling, Algorithm R) driven by Philox, so the sample depends on the seed
// and the inputs only. SentencePiece 0.1.97 samples with a fixed internal
// seed of its own, which is why moe-data samples itself.
Sample sample_sentences(SentenceReader& reader, uint64_t k, uint64_t seed, Progress& progress) {
  static const uint64_t stream = stable_hash("moe-data/sentence-sample");
  Sample s;
  std::string line;
  while (reader.next(&line)) {
    const uint64_t i = s.seen++;
    s.seen_bytes += line.size();
    if (i < k) {
      s.sentences.push_back(line);
    } else {
      const uint64_t j = philox_uniform_int(seed, stream, i, i + 1);
      if (j < k) s.sentences[j].swap(line);
    }
    if ((i & 1023) == 0) progress.update(reader.disk_bytes(), s.seen);
  }
  progress.finish(reader.disk_bytes(), s.seen);
  return s;
}

// Hands the sample to SentencePiece, freeing each line once it took a copy.
class SampleIterator : public sentencepiece::SentenceIterator {
 public:
  explicit SampleIterator(std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { std::string().swap(v_[i_++]); }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

void tokenizer_train(const TrainOptions& o) {
  constexpr int64_t kFixedPieces = 4 + 256;  // specials + byte-fallback pieces
  if (o.vocab_size <= kFixedPieces)
    throw InputError(fmt::format(
        "tokenizer-train: --vocab-size {} is too small: a model holds {} special and byte pieces "
        "before any piece of text (use a few hundred more than that at least)",
        o.vocab_size, kFixedPieces));
  const auto files = expand_inputs(o.inputs);
  uint64_t total = 0;
  for (const auto& f : files) total += f.bytes;
  const int threads =
      std::clamp(o.threads > 0 ? o.threads : int(std::thread::hardware_concurrency()), 1, 128);

  SentenceReader reader(files, o.text_field, o.skip_bad_lines);
  Progress progress("reading", total, "sentences", false);
  Sample sample = sample_sentences(reader, uint64_t(o.max_sentences), o.seed, progress);
  if (sample.seen == 0)
    throw DataError("tokenizer-train: the inputs hold no text (" + std::to_string(files.size()) +
                    " files, " + human_bytes(double(total)) + ")");
  if (reader.bad_lines() > 0)
    fmt::print(stderr, "moe-data: warning: skipped {} bad JSONL lines; the first: {}\n",
               reader.bad_lines(), reader.first_bad_line());
  const double read_seconds = progress.seconds();
  fmt::print(stderr,
             "tokenizer-train: {} sentences ({}) read in {:.1f} s, training BPE on {} of "
             "them (vocab {}, {} threads)\n",
             sample.seen, human_bytes(double(sample.seen_bytes)), read_seconds,
             sample.sentences.size(), o.vocab_size, threads);

  std::error_code ec;
  const auto parent = std::filesystem::path(o.output).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) throw DataError(parent.string() + ": cannot create directory: " + ec.message());

  auto args = trainer_settings();
  args["model_prefix"] = o.output;
  args["vocab_size"] = std::to_string(o.vocab_size);
  args["character_coverage"] = fmt::format("{}", o.character_coverage);
  args["input_sentence_size"] = std::to_string(0);  // the sample above is the whole input
  args["num_threads"] = std::to_string(threads);
  sentencepiece::SetRandomGeneratorSeed(unsigned(o.seed % 0xffffffffu));  // ~0u means "random"
  const size_t sampled = sample.sentences.size();
  SampleIterator it(sample.sentences);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it);
  if (!status.ok())
    throw InputError("tokenizer-train: SentencePiece: " + clean_status_message(status.message()));

  const Tokenizer tok = load_tokenizer(o.output + ".model");
  fmt::print(
      "tokenizer: vocab {} (BPE, byte fallback; unk {} bos {} eos {} pad {}) | {} sentences "
      "seen, {} sampled | {:.1f} s | {}.model, {}.vocab\n",
      tok.vocab_size, tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id, sample.seen, sampled,
      progress.seconds(), o.output, o.output);
}

}  // namespace moe::data
