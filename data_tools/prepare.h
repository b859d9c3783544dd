// moe-data prepare: corpus inputs -> token shards + summary.json.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
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

// The split rule: a document goes to validation when a Philox draw keyed by
// `seed` at its content hash (document_hash of its text) falls at or below
// `val_fraction`. It depends on the document alone: not on its position, on
// the order of the input files, on threads or shards; validation documents
// are spread over every file in proportion, and copies of one text land in
// the same split.
uint64_t document_hash(std::string_view text);
bool is_val_document(uint64_t seed, uint64_t doc_hash, double val_fraction);

// Runs the whole preparation; prints progress on stderr and a one-line
// summary on stdout. Throws InputError/DataError on bad input.
void prepare(const PrepareOptions& o);

}  // namespace moe::data
