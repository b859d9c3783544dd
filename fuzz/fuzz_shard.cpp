// Fuzz target: a token shard as moe-train and moe-eval open it: the header and
// size checks, the shard set over it (twice, so the agreement checks run) and
// the validation reader's tokens. The first input byte picks the model vocab
// the set is checked against. A malformed shard must be a DataError.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "data/shard_dataset.h"
#include "data/shard_format.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int64_t model_vocab = int64_t(1) << (8 + data[0] % 17);  // 256 .. 16M
  ++data;
  --size;
  try {
    const moe::ShardHeader h = moe::decode_shard_header(data, size, "header");
    moe::check_shard_size(h, size, "header");
  } catch (const moe::DataError&) {
  }
  const std::string path = moe::fuzz::write_file("train_00000.bin", data, size);
  try {
    moe::ShardSet set({path, path}, model_vocab, "fuzz");
    const int seq_len = int(std::min<int64_t>(64, set.total_tokens() - 1));
    if (seq_len < 1) return 0;
    moe::ValidationReader val(std::move(set), seq_len);
    std::vector<int32_t> tokens(size_t(seq_len) + 1);
    for (int64_t k = 0; k < std::min<int64_t>(val.num_sequences(), 64); ++k)
      val.read(k, tokens.data());
  } catch (const moe::DataError&) {
  }
  return 0;
}
