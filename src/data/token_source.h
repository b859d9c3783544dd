// Where training sequences come from. A source yields sequence j of step s as
// a pure function of (seed, s, j): the sampler is stateless, so any rank of
// any world size reads the same global batch, and a resumed run continues
// with exactly the data the uninterrupted run would have seen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/mapped_file.h"

namespace moe {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // Writes the S+1 tokens of sequence j of step `step` (inputs and the shifted
  // targets overlap by S tokens).
  virtual void sequence(int64_t step, int j, int32_t* out) const = 0;
  virtual std::string describe() const = 0;
};

// A fixed random first-order Markov chain over the vocab in which every token
// has `branching` equally likely successors: learnable structure with a known
// floor ln(branching) on the loss. branching == vocab is uniform noise.
class SyntheticSource final : public TokenSource {
 public:
  SyntheticSource(uint64_t seed, int vocab, int branching, int seq_len, int global_batch);
  void sequence(int64_t step, int j, int32_t* out) const override;
  std::string describe() const override;

 private:
  uint64_t seed_;
  int vocab_, branching_, seq_len_, global_batch_;
  std::vector<int32_t> successors_;  // [vocab * branching]
};

// A raw little-endian token file (uint16 or uint32 tokens), memory-mapped;
// each sequence starts at a position drawn uniformly from (seed, step, j).
class TokenFileSource final : public TokenSource {
 public:
  TokenFileSource(const std::string& path, TokenDType dtype, int vocab, uint64_t seed,
                  int seq_len, int global_batch);
  void sequence(int64_t step, int j, int32_t* out) const override;
  std::string describe() const override;
  int64_t tokens() const { return n_tokens_; }

 private:
  std::string path_;
  TokenDType dtype_;
  uint64_t seed_;
  int seq_len_, global_batch_;
  MappedFile file_;
  int64_t n_tokens_ = 0;
};

// The training source data.source names: synthetic, a raw token file, or
// token shards (ShardTokenSource, shard_dataset.h). Throws DataError.
std::unique_ptr<TokenSource> make_train_source(const Config& cfg);

// Throws DataError, before any model or backend exists, when the files
// data.path or data.val_path name are not there; the message ends with
// data.prepare_hint (which corpus the config expects and how to make it).
void check_data_present(const Config& cfg);

// Splits each step's global batch over ranks and micro-batches: rank r owns
// sequences [r * G/W, (r+1) * G/W), read micro_batch at a time.
class BatchSampler {
 public:
  BatchSampler(const TokenSource& src, int seq_len, int global_batch, int micro_batch, int rank,
               int world);
  int micro_batches_per_rank() const { return per_rank_ / micro_; }
  // Fills tokens and targets (host int32 [micro_batch * seq_len]).
  void micro_batch(int64_t step, int m, int32_t* tokens, int32_t* targets) const;

 private:
  const TokenSource& src_;
  int seq_len_, micro_, per_rank_, first_;
};

}  // namespace moe
