#include "runtime/backend_choice.h"

#include <spdlog/spdlog.h>

#include <string>

#include "core/error.h"
#include "runtime/device_info.h"

#ifdef MOE_WITH_CUDA
#include "backend/cuda/cuda_device.h"
#include "comm/nccl_comm.h"
#include "router.h"
#endif

namespace moe {

namespace {
[[noreturn]] void refuse(const std::string& key, const std::string& why) {
  throw ConfigError("config: " + key + ": " + why);
}

// Why train.backend auto runs on the CPU here.
const char* why_no_cuda() {
#ifndef MOE_WITH_CUDA
  return "this build has no CUDA (configure with -DMOE_CUDA=ON)";
#else
  return "no CUDA device is visible";
#endif
}
}  // namespace

BackendKind resolve_backend(const Config& cfg, bool announce_fallback) {
  const TrainConfig& t = cfg.train;
  BackendKind kind = t.backend;
  if (kind == BackendKind::Auto) kind = cuda_available() ? BackendKind::Cuda : BackendKind::Cpu;
  if (kind == BackendKind::Cuda) {
#ifndef MOE_WITH_CUDA
    refuse("train.backend", "cuda, but this build has no CUDA (configure with -DMOE_CUDA=ON)");
#else
    if (cfg.moe.top_k > kernels::kTopkMaxK)
      refuse("moe.top_k", std::to_string(cfg.moe.top_k) + ", but the CUDA backend picks at most " +
                              std::to_string(kernels::kTopkMaxK) +
                              " experts per token (kernels/router.h); use train.backend cpu");
    if (cfg.moe.n_group > kernels::kTopkMaxGroups)
      refuse("moe.n_group", std::to_string(cfg.moe.n_group) +
                                ", but the CUDA backend's group-limited routing takes at most " +
                                std::to_string(kernels::kTopkMaxGroups) +
                                " groups (kernels/router.h); use train.backend cpu");
#endif
    if (!cuda_available()) refuse("train.backend", "cuda, but no CUDA device is visible");
    if (t.precision == Precision::Float64)
      refuse("train.precision", "float64 runs on the CPU backend only");
  } else {
    const std::string why =
        std::string(" needs the CUDA backend, and this run is on the CPU") +
        (t.backend == BackendKind::Auto ? std::string(" (train.backend auto: ") + why_no_cuda() + ")"
                                        : "");
    if (cfg.parallel.transport == Transport::Nccl)
      refuse("parallel.transport", "nccl" + why + "; use mpi or auto");
    // After the refusals (an error stays one line): a GPU run that landed on
    // a node without one is noticed.
    if (t.backend == BackendKind::Auto && announce_fallback)
      spdlog::warn("train.backend auto: running on the CPU: {}", why_no_cuda());
  }
  return kind;
}

std::string backend_caveat(BackendKind kind) {
  if (kind != BackendKind::Cuda) return "";
  return "the CUDA backend has not yet been validated on a GPU by this project's tests: run "
         "`ctest -L gpu` on this machine before trusting its numbers (docs/cuda.md)";
}

int cuda_device_for_rank(int local_rank) {
#ifdef MOE_WITH_CUDA
  const int devices = cuda_device_count();
  if (devices == 0) refuse("train.backend", "cuda, but no CUDA device is visible");
  return local_rank % devices;
#else
  (void)local_rank;
  throw InternalError("cuda_device_for_rank: this build has no CUDA");
#endif
}

std::unique_ptr<Comm> make_device_world_comm(const Config& cfg, BackendKind kind, Comm& world,
                                             int local_rank, void* compute_stream) {
  if (kind != BackendKind::Cuda || world.size() == 1 || cfg.parallel.transport == Transport::Mpi)
    return nullptr;
  // Null would be the legacy default stream, which orders nothing with the
  // backend's non-blocking one.
  if (!compute_stream)
    throw InternalError("make_device_world_comm: the backend has no stream to order NCCL with");
#ifdef MOE_WITH_CUDA
  const double timeout = cfg.parallel.timeout_seconds > 0 ? cfg.parallel.timeout_seconds : 600.0;
  return std::make_unique<NcclComm>(world, cuda_device_for_rank(local_rank),
                                    static_cast<cudaStream_t>(compute_stream), timeout);
#else
  (void)local_rank;
  throw InternalError("make_device_world_comm: CUDA chosen in a build without CUDA");
#endif
}

template <typename A>
std::unique_ptr<Backend<float, A>> make_float_backend(const Config& cfg, BackendKind kind,
                                                      int local_rank) {
  if (kind == BackendKind::Cpu) return make_cpu_backend<float, A>(cfg.train.threads);
#ifdef MOE_WITH_CUDA
  return make_cuda_backend<A>(cuda_device_for_rank(local_rank));
#else
  (void)local_rank;
  throw InternalError("make_float_backend: CUDA chosen in a build without CUDA");
#endif
}

template std::unique_ptr<Backend<float>> make_float_backend<float>(const Config&, BackendKind,
                                                                   int);
template std::unique_ptr<Backend<float, bf16>> make_float_backend<bf16>(const Config&,
                                                                        BackendKind, int);

}  // namespace moe
