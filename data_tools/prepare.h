// moe-data prepare: corpus inputs -> token shards + summary.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::data {

struct PrepareOptions {
  std::string tokenizer;  // a SentencePiece .model
  std::vector<std::string> inputs;
  std::string output;  // directory
  double val_fraction = 0.005;
  uint64_t seed = 1234;
  int threads = 0;  // encoder threads; 0: all cores
  uint64_t shard_tokens = 100000000;
  std::string text_field = "text";
  bool whole_file_docs = false;  // --txt-docs file
  bool skip_bad_lines = false;
  bool force = false;
};

// The split rule: document `index` (0-based, in input order, counting only
// documents that are written) goes to validation when a Philox draw keyed by
// `seed` falls at or below `val_fraction`. Independent of threads and shards.
bool is_val_document(uint64_t seed, uint64_t index, double val_fraction);

// Runs the whole preparation; prints progress on stderr and a one-line
// summary on stdout. Throws InputError/DataError on bad input.
void prepare(const PrepareOptions& o);

}  // namespace moe::data
