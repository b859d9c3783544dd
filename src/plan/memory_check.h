// The memory check of moe-train, moe-bench and moe-eval: before anything is
// allocated, the memory plan (plan/memory_plan.h) is compared with the memory
// that is there, so that a config too big for the machine ends in one line
// and exit code 2 instead of the kernel's OOM killer (docs/reliability.md).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/host_memory.h"
#include "plan/memory_plan.h"

namespace moe {

// The memory this rank's plan must fit in: on CUDA the free memory of its GPU
// (cudaMemGetInfo), on the CPU the host's (core/host_memory.h: MemAvailable
// or the cgroup's headroom, the smaller). Tests fake it with
// MOE_FAULT_INJECTION=memory.available_mib=N. Nothing when it is unknown.
std::optional<AvailableMemory> available_memory(BackendKind kind, int local_rank);

// What a training config can change to need less memory per rank, for the
// refusal's line: "lower train.micro_batch", "set train.recompute full", ...
std::vector<std::string> training_memory_hints(const Config& cfg, BackendKind kind,
                                               int world_size);

// The host memory a checkpoint save takes besides the plan, on the rank that
// writes it: AdamW's m and v brought to the host, a host copy of the
// parameters and the per-tensor copies of all three (train/checkpoint.cpp,
// tensor_states), 6 x the weights at the peak.
size_t checkpoint_save_host_bytes(const MemoryPlan& plan);

// Refuses a plan that does not fit: an InputError (exit 2) of one line with
// the planned and available sizes, where the figure came from, the hints and
// --force. The ranks of this node (CPU: local_size) or of this GPU share the
// memory, so they must fit together, plus `save_bytes` once (CPU only: a
// checkpoint save's host copies). With `force` the refusal is a warning and
// the run goes on. Does nothing when the available memory is unknown.
void check_memory(const MemoryPlan& plan, BackendKind kind, int local_rank, int local_size,
                  const std::vector<std::string>& hints, bool force, size_t save_bytes = 0);

// moe-train and moe-bench: the training plan of world rank `rank` of
// `world_size`, checked with the training hints; `saves_checkpoints`
// (moe-train with a checkpoint.dir) adds a save's host copies on the CPU.
void check_training_memory(const Config& cfg, BackendKind kind, int world_size, int rank,
                           int local_rank, int local_size, bool force,
                           bool saves_checkpoints = false);

}  // namespace moe
