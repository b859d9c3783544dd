// Reading token shards (shard_format.h): a set of memory-mapped shards seen as
// one token stream, the stateless training sampler over it, and the in-order
// validation reader.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/mapped_file.h"
#include "data/shard_format.h"
#include "data/token_source.h"

namespace moe {

// The shard files of `spec` for `split` ("train" or "val"): a directory gives
// its `<split>_*.bin` files, a glob pattern its matches, anything else is one
// file. Sorted by name. Throws DataError naming spec and split if none.
std::vector<std::string> resolve_shards(const std::string& spec, const std::string& split);

// Shards, mmapped read-only and validated, concatenated into one stream.
// Movable, not copyable (owns the mappings). A shard that changes on disk
// while mapped is a DataError at the next read (data/mapped_file.h).
class ShardSet {
 public:
  // `spec` names the set in errors (the path or pattern the files came from).
  // Throws DataError: no files, a bad header or size, shards that disagree,
  // a shard vocab above model_vocab, or no tokens at all.
  ShardSet(const std::vector<std::string>& paths, int64_t model_vocab, const std::string& spec);

  int64_t total_tokens() const { return total_; }
  size_t num_shards() const { return shards_.size(); }
  const std::string& path(size_t i) const { return shards_[i].file.path(); }
  // The common header; token_count and doc_count are the totals of the set.
  const ShardHeader& header() const { return header_; }
  std::string describe() const;
  // Tokens [pos, pos + n) of the stream, across shard boundaries. Throws
  // DataError if a token is outside the shard's vocab (a corrupt file) or a
  // shard read changed on disk since it was opened.
  void read(int64_t pos, int64_t n, int32_t* out) const;

 private:
  struct Shard {
    MappedFile file;               // whole file, header included
    int64_t first = 0, count = 0;  // position in the stream, tokens
  };

  std::string spec_;
  std::vector<Shard> shards_;
  ShardHeader header_;
  int64_t total_ = 0;
};

// Training sampler: sequence j of step s is the S+1 tokens starting at a
// position drawn uniformly from [0, total - (S+1)] by Philox keyed by
// (seed, s * global_batch + j). Stateless, so identical on any world size.
class ShardTokenSource final : public TokenSource {
 public:
  // Throws DataError if the set holds fewer than seq_len + 1 tokens.
  ShardTokenSource(ShardSet shards, uint64_t seed, int seq_len, int global_batch);
  void sequence(int64_t step, int j, int32_t* out) const override;
  std::string describe() const override;
  // First token of sequence j of `step` (what sequence() reads from).
  int64_t start(int64_t step, int j) const;
  const ShardSet& shards() const { return shards_; }

 private:
  ShardSet shards_;
  uint64_t seed_;
  int seq_len_, global_batch_;
};

// Validation in stream order, each token predicted once: sequence k holds
// tokens [k*S, k*S + S], inputs the first S, targets the last S. Token 0 is
// never a target, nor are the fewer than S tokens after the last full
// sequence (tokens_skipped()).
class ValidationReader {
 public:
  // Throws DataError if the set holds fewer than seq_len + 1 tokens.
  ValidationReader(ShardSet shards, int seq_len);
  int64_t num_sequences() const { return n_seq_; }
  int64_t tokens_skipped() const { return shards_.total_tokens() - 1 - n_seq_ * seq_len_; }
  int seq_len() const { return seq_len_; }
  // The S+1 tokens of sequence k.
  void read(int64_t k, int32_t* out) const;
  // Sequences [first, first + B): host int32 [B * S] inputs and targets.
  void batch(int64_t first, int B, int32_t* tokens, int32_t* targets) const;
  std::string describe() const;
  const ShardSet& shards() const { return shards_; }

 private:
  ShardSet shards_;
  int seq_len_;
  int64_t n_seq_;
};

// The shard training source of cfg (data.path, split "train").
std::unique_ptr<ShardTokenSource> make_shard_source(const Config& cfg);
// The validation reader of cfg: data.val_path, else the val_*.bin of data.path
// when that is a directory holding some; nullptr when there is no validation
// data. An explicit data.val_path that matches nothing is a DataError.
std::unique_ptr<ValidationReader> make_validation_reader(const Config& cfg);

}  // namespace moe
