// A validation split for the CLI tests: DIR/val_00000.bin holding one
// document of `tokens` tokens of the tiny model's vocabulary (512), a fixed
// pattern, so moe-train's in-training eval and moe-eval have data to read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "data/shard_format.h"

namespace moe::test {

inline void write_val_shard(const std::filesystem::path& dir, size_t tokens) {
  std::filesystem::create_directories(dir);
  ShardHeader h;
  h.vocab_size = 512;
  h.eos_id = 0;
  ShardWriter w((dir / "val_00000.bin").string(), h);
  std::vector<uint32_t> t(tokens);
  for (size_t i = 0; i < t.size(); ++i) t[i] = uint32_t((i * 37 + 5) % 512);
  w.append(t.data(), t.size());
  w.end_document();
  w.finish();
}

}  // namespace moe::test
