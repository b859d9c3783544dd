// Which backend a program runs on: train.backend resolved against this build
// and the devices this process can see, then created. Shared by moe-train,
// moe-eval and moe-bench so the three agree on every rule.
#pragma once

#include <memory>
#include <type_traits>

#include "backend/backend.h"
#include "config/config.h"
#include "comm/comm.h"

namespace moe {

// cpu or cuda for this process (auto: cuda when this build has CUDA and a
// device is visible). Throws ConfigError naming the key when the config
// cannot run here: cuda without a CUDA build or a visible device; transport
// nccl on the CPU; float64 on CUDA. Logs one warning when auto resolves to
// the CPU, naming why (announce_fallback false: a program's own default).
BackendKind resolve_backend(const Config& cfg, bool announce_fallback = true);

// One line for the log when the run is on CUDA: the backend's validation
// status (empty on the CPU).
std::string backend_caveat(BackendKind kind);

// The backend of `kind` with fp32 parameters and activations of type A
// (float or bf16); CUDA on device local_rank % (visible devices), so each
// rank of a node gets its own GPU.
template <typename A>
std::unique_ptr<Backend<float, A>> make_float_backend(const Config& cfg, BackendKind kind,
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

// <float, A>: make_float_backend; <double> (float64 reference runs): the CPU.
template <typename T, typename A = T>
std::unique_ptr<Backend<T, A>> make_backend(const Config& cfg, BackendKind kind, int local_rank) {
  if constexpr (std::is_same_v<T, float>)
    return make_float_backend<A>(cfg, kind, local_rank);
  else
    return make_cpu_backend<T, A>(cfg.train.threads);
}

// Runs fn.template operator()<T, A>() with the element types of
// train.precision (backend.h): float64 -> <double, double>, float32 ->
// <float, float>, bfloat16 -> <float, bf16>. The programs write their run
// once as a template and call it through this.
template <typename Fn>
decltype(auto) with_element_types(const Config& cfg, Fn&& fn) {
  switch (cfg.train.precision) {
    case Precision::Float64: return fn.template operator()<double, double>();
    case Precision::BFloat16: return fn.template operator()<float, bf16>();
    case Precision::Float32: break;
  }
  return fn.template operator()<float, float>();
}

}  // namespace moe
