// Which backend a program runs on: train.backend resolved against this build
// and the devices this process can see, then created. Shared by moe-train,
// moe-eval and moe-bench so the three agree on every rule.
#pragma once

#include <memory>
#include <type_traits>

#include "backend/backend.h"
#include "config/config.h"
#include "dist/comm.h"

namespace moe {

// cpu or cuda for this process (auto: cuda when this build has CUDA and a
// device is visible). Throws ConfigError naming the key when the config
// cannot run here: cuda without a CUDA build or a visible device; bfloat16 or
// transport nccl on the CPU; float64 on CUDA.
BackendKind resolve_backend(const Config& cfg);

// One line for the log when the run is on CUDA: the backend's validation
// status (empty on the CPU).
std::string backend_caveat(BackendKind kind);

// The backend of `kind` with fp32 storage; CUDA on device
// local_rank % (visible devices), so each rank of a node gets its own GPU.
std::unique_ptr<Backend<float>> make_float_backend(const Config& cfg, BackendKind kind,
                                                   int local_rank);

// The world communicator on GPU memory for a multi-rank CUDA run (NcclComm
// over the world's ranks, on this rank's device; split it like the host
// world for EP and replica groups) when parallel.transport is nccl or auto;
// null otherwise (one rank, the CPU, or transport mpi: gradients and MoE
// rows then go through host memory over MPI). `compute_stream`: the
// backend's Backend::native_stream(), which the collectives are ordered
// with; the backend must outlive the communicator.
std::unique_ptr<Comm> make_device_world_comm(const Config& cfg, BackendKind kind, Comm& world,
                                             int local_rank, void* compute_stream);

// The GPU this rank uses: local_rank % (visible devices). CUDA builds only.
int cuda_device_for_rank(int local_rank);

// T = float: make_float_backend; T = double (float64 reference runs): the CPU.
template <typename T>
std::unique_ptr<Backend<T>> make_backend(const Config& cfg, BackendKind kind, int local_rank) {
  if constexpr (std::is_same_v<T, float>)
    return make_float_backend(cfg, kind, local_rank);
  else
    return make_cpu_backend<T>(cfg.train.threads);
}

}  // namespace moe
