// The memory plan of a config (moe-train --plan, and beside the measured peak
// in moe-bench): the backend memory one rank holds, by kind, for the config
// and parallel layout given. It comes from the allocation code itself: the
// model is built on a backend that allocates nothing and only counts the
// requests, so the plan needs no GPU and cannot drift from what training
// allocates (tests/model/test_memory_plan.cpp holds it to the CPU backend's real
// allocations). Only the CUDA backend's own workspace is an estimate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "config/config.h"

namespace moe {

struct MemoryPlan {
  std::string precision;        // train.precision
  std::string recompute;        // train.recompute
  BackendKind backend = BackendKind::Cpu;
  int world_size = 1, rank = 0, ep_size = 1, micro_batch = 1, seq_len = 0;
  int zero = 0;                 // train.zero
  int64_t total_params = 0, active_params = 0, flops_per_token = 0;  // the whole model
  size_t local_params = 0;      // parameters on this rank (experts sharded by EP)
  // Bytes, this rank.
  size_t weights = 0;           // fp32 master weights (fp64 in float64 runs)
  size_t grads = 0;             // their gradients
  size_t optimizer = 0;         // AdamW first and second moments (ZeRO-1: this rank's shards)
  size_t weight_copies = 0;     // bf16 copies of the matmul weights (CUDA bf16)
  size_t activations = 0;       // everything kept for backward, the token buffers, the router bias
  size_t scratch = 0;           // shared: one layer's backward, one loss chunk
  size_t workspace = 0;         // the CUDA backend's own buffers (estimated)
  int loss_chunk_rows = 0;

  size_t total() const {
    return weights + grads + optimizer + weight_copies + activations + scratch + workspace;
  }
};

// The plan for world rank `rank` of `world_size` ranks (cfg.parallel.ep_size
// experts groups) on `kind`. Throws ConfigError for a layout the config
// cannot run (ep_size not dividing the world or the experts).
MemoryPlan plan_memory(const Config& cfg, BackendKind kind, int world_size, int rank = 0);

// The plan of moe-eval: one rank's model for `batch` sequences per forward
// and its router bias, no optimizer state (the gradients are allocated with
// the parameters all the same).
MemoryPlan plan_eval_memory(const Config& cfg, BackendKind kind, int batch);

// A table for the terminal, one line per kind, GiB.
std::string format_plan(const MemoryPlan& plan);
nlohmann::json plan_to_json(const MemoryPlan& plan);

}  // namespace moe
