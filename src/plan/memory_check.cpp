#include "plan/memory_check.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "core/error.h"
#include "core/fault.h"
#include "runtime/backend_choice.h"
#include "runtime/device_info.h"

#ifdef MOE_WITH_CUDA
#include "backend/cuda/cuda_device.h"
#endif

namespace moe {
namespace {

// GiB, or MiB below one GiB (the test configs' plans are a few MiB).
std::string size_text(double bytes) {
  char buf[32];
  if (bytes >= double(uint64_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(uint64_t(1) << 30));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(uint64_t(1) << 20));
  return buf;
}

// The ranks of this node that use this rank's GPU (local_rank % devices).
// One visible device is taken as this rank's own: Slurm's --gpus-per-task,
// ConstrainDevices or a per-rank CUDA_VISIBLE_DEVICES show each rank one GPU,
// and counting all the node's ranks on it would refuse a job that fits.
int ranks_on_my_gpu(int local_rank, int local_size) {
#ifdef MOE_WITH_CUDA
  const int devices = cuda_device_count();
  if (devices <= 1) return 1;
  const int device = local_rank % devices;
  return local_size / devices + (device < local_size % devices ? 1 : 0);
#else
  (void)local_rank;
  (void)local_size;
  return 1;
#endif
}

}  // namespace

std::optional<AvailableMemory> available_memory(BackendKind kind, int local_rank) {
  if (const auto mib = injected_fault("memory.available_mib")) {
    uint64_t v = 0;
    const auto [end, ec] = std::from_chars(mib->data(), mib->data() + mib->size(), v);
    if (ec != std::errc() || end != mib->data() + mib->size() || mib->empty())
      throw InputError("MOE_FAULT_INJECTION: memory.available_mib: expected a number of MiB, got '" +
                       *mib + "'");
    return AvailableMemory{v << 20, "MOE_FAULT_INJECTION memory.available_mib"};
  }
  if (kind == BackendKind::Cuda) {
    // Creates this rank's CUDA context first, so its free memory is left out.
    const GpuInfo g = gpu_info(cuda_device_for_rank(local_rank));
    return AvailableMemory{g.total_bytes - g.used_bytes, "GPU free"};
  }
  return host_available_memory();
}

std::vector<std::string> training_memory_hints(const Config& cfg, BackendKind kind,
                                               int world_size) {
  std::vector<std::string> hints;
  if (cfg.train.micro_batch > 1) hints.push_back("lower train.micro_batch");
  if (cfg.train.recompute == Recompute::None)
    hints.push_back("set train.recompute selective or full");
  else if (cfg.train.recompute == Recompute::Selective)
    hints.push_back("set train.recompute full");
  // Both divide per-rank state over more ranks: on GPUs each brings its own
  // memory; on one CPU node the ranks share it.
  if (world_size > 1 && cfg.train.zero == 0) hints.push_back("set train.zero 1");
  if (world_size > 1 && cfg.parallel.ep_size < world_size)
    hints.push_back("raise parallel.ep_size");
  if (world_size == 1 && kind == BackendKind::Cuda)
    hints.push_back("spread the model over more GPUs (parallel.ep_size, train.zero)");
  return hints;
}

size_t checkpoint_save_host_bytes(const MemoryPlan& plan) { return 6 * plan.weights; }

void check_memory(const MemoryPlan& plan, BackendKind kind, int local_rank, int local_size,
                  const std::vector<std::string>& hints, bool force, size_t save_bytes) {
  const std::optional<AvailableMemory> avail = available_memory(kind, local_rank);
  if (!avail) {
    spdlog::debug("memory check: the available memory is unknown here; not checked");
    return;
  }
  const int sharing = kind == BackendKind::Cuda ? ranks_on_my_gpu(local_rank, local_size)
                                                : std::max(1, local_size);
  // On a GPU the save's copies are in host memory, which is not what is checked.
  const double save = kind == BackendKind::Cuda ? 0.0 : double(save_bytes);
  const double need = double(plan.total()) * sharing + save;
  if (need <= double(avail->bytes)) {
    spdlog::debug("memory check: the plan needs {}, {} is available ({})", size_text(need),
                  size_text(double(avail->bytes)), avail->source);
    return;
  }
  std::string what = "the plan needs " + size_text(double(plan.total())) + " per rank";
  if (save > 0) what += " and a checkpoint save " + size_text(save) + " of host copies";
  if (sharing > 1 || save > 0)
    what += ", " + size_text(need) + (sharing > 1 ? " for the " + std::to_string(sharing) +
                                                        " ranks on this " +
                                                        (kind == BackendKind::Cuda ? "GPU" : "node")
                                                  : std::string(" in all"));
  what += ", and " + size_text(double(avail->bytes)) + " is available (" + avail->source + ")";
  if (force) {
    spdlog::warn("memory: {}: trying anyway (--force)", what);
    return;
  }
  std::string change;
  for (const std::string& h : hints) change += h + ", ";
  throw InputError(what + "; " + change + (hints.empty() ? "" : "or ") +
                   "pass --force to try anyway");
}

void check_training_memory(const Config& cfg, BackendKind kind, int world_size, int rank,
                           int local_rank, int local_size, bool force, bool saves_checkpoints) {
  const MemoryPlan plan = plan_memory(cfg, kind, world_size, rank);
  check_memory(plan, kind, local_rank, local_size, training_memory_hints(cfg, kind, world_size),
               force, saves_checkpoints ? checkpoint_save_host_bytes(plan) : 0);
}

}  // namespace moe
