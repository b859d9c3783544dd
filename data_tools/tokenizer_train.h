// moe-data tokenizer-train: a SentencePiece BPE model from corpus inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::data {

struct TrainOptions {
  std::vector<std::string> inputs;
  int64_t vocab_size = 0;
  std::string output;                  // PREFIX: writes PREFIX.model and PREFIX.vocab
  int64_t max_sentences = 1000000;     // lines sampled uniformly from the corpus
  uint64_t seed = 1234;                // of the sample
  double character_coverage = 0.9995;  // rarer characters become byte pieces
  int threads = 0;                     // 0: all cores
  std::string text_field = "text";     // JSONL
  bool skip_bad_lines = false;
};

// Trains and writes the model; prints a summary on stdout. Throws InputError
// on bad inputs or settings SentencePiece refuses (e.g. a vocab too small).
void tokenizer_train(const TrainOptions& o);

}  // namespace moe::data
