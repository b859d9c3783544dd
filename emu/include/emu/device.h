// The emulated device's own interface, beside the CUDA runtime it emulates
// (cuda_runtime.h): how its streams run, the checks its libraries (cuBLAS,
// cuBLASLt, NCCL shims) share, and what tests may inspect or reset.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "emu/exec.h"

namespace emu {

// Queues a kernel launch (emu::launch, from the rewritten <<<>>>): the
// configuration is checked now (an error goes to cudaGetLastError), the
// body runs on every thread of the grid when the stream reaches it.
void enqueue_kernel(const Site& site, const void* fn, dim3 grid, dim3 block, size_t dynamic_smem,
                    cudaStream_t stream, std::function<void()> body);

// How queued work runs at a synchronisation point. InOrder: the oldest
// ready operation first (what a device usually does). Adversarial: the most
// recently queued ready operation first, so work that two streams do not
// order by an event runs in the order that exposes a missing wait.
enum class StreamMode { InOrder, Adversarial };
// From EMU_STREAMS=in-order|adversarial (default in-order); tests may set it.
StreamMode& stream_mode();

// The architecture the device claims and enforces (shared memory opt-in
// limit, compute capability): EMU_ARCH=80|86|89|90 (default 90).
int arch();

// Queues fn on stream as one operation (a library call: cuBLAS, NCCL).
// `what` names it in diagnostics. Returns cudaErrorInvalidResourceHandle for
// an unknown stream, or the device's sticky error.
cudaError_t enqueue(cudaStream_t stream, std::string what, std::function<void()> fn);

// For a library operation accepted but not yet queued (NCCL's non-blocking
// ncclInProgress): until release_stream, queuing anything on the stream (a
// kernel, copy, memset, cudaFreeAsync, event record or wait, emu::enqueue,
// another hold) is a sticky device fault whose message names the work, the
// stream and `reason` ("... queued on stream 0x.. while <reason>"). `what`
// names the holding operation, for when the stream is already held.
// Returns cudaSuccess, the sticky error, or cudaErrorInvalidResourceHandle.
cudaError_t hold_stream(cudaStream_t stream, const std::string& what, std::string reason);
void release_stream(cudaStream_t stream);

// Device memory checks for the libraries: throws emu::KernelError unless
// [p, p + bytes) lies in one live cudaMalloc allocation. `what` names the
// argument in the message.
void check_device_range(const void* p, size_t bytes, const char* what);
bool is_device_pointer(const void* p);

// Runs queued work until every stream is empty (cudaDeviceSynchronize
// without the error reporting).
void drain();
// The message of the fault that made the device's error sticky ("" when
// none): which kernel, block, thread and rule.
const std::string& fault_message();
// Forgets a sticky fault, all queued work, streams, events and memory: for
// tests that provoke faults on purpose.
void reset_device();
// Bytes in live device allocations.
size_t bytes_allocated();

}  // namespace emu
