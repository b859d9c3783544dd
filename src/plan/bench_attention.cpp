#include "plan/bench_attention.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "core/error.h"
#include "runtime/device_info.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>

#include "attention_tc.h"
#include "backend/cuda/cuda_device.h"
#endif

namespace moe {

double attention_forward_flops(int B, int S, int H, int hd) {
  return 4.0 * B * H * static_cast<double>(S) * S * hd / 2.0;
}

double attention_backward_flops(int B, int S, int H, int hd) {
  return 2.5 * attention_forward_flops(B, S, H, hd);
}

#ifdef MOE_WITH_CUDA

namespace {

// Device memory, freed with the object.
class DeviceMem {
 public:
  explicit DeviceMem(size_t bytes) {
    if (bytes > 0) MOE_CUDA_CHECK(cudaMalloc(&p_, bytes));
  }
  ~DeviceMem() { cudaFree(p_); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

class EventPair {
 public:
  EventPair() {
    MOE_CUDA_CHECK(cudaEventCreate(&start));
    MOE_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~EventPair() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  cudaEvent_t start = nullptr, stop = nullptr;
};

// n values ~ N(0, 1) as bf16 (round to nearest even), copied to dst.
void fill_random_bf16(__nv_bfloat16* dst, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> h(n);
  for (auto& x : h) {
    const float f = nd(rng);
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    x = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  MOE_CUDA_CHECK(cudaMemcpy(dst, h.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
}

// Mean milliseconds per call over `reps` calls after `warmup` untimed ones.
template <typename Call>
double time_ms(const Call& call, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) call();
  EventPair ev;
  MOE_CUDA_CHECK(cudaEventRecord(ev.start, nullptr));
  for (int i = 0; i < reps; ++i) call();
  MOE_CUDA_CHECK(cudaEventRecord(ev.stop, nullptr));
  MOE_CUDA_CHECK(cudaEventSynchronize(ev.stop));
  float ms = 0.f;
  MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  return static_cast<double>(ms) / reps;
}

}  // namespace

AttentionBenchResult bench_attention(int B, int S, int H, int hd, int warmup, int reps) {
  MOE_CHECK(cuda_available(), "bench_attention: no CUDA device visible");
  MOE_CHECK(B > 0 && S > 0 && H > 0 && hd > 0 && warmup >= 0 && reps > 0,
            "bench_attention: bad arguments");
  MOE_CUDA_CHECK(cudaSetDevice(0));
  const size_t N = static_cast<size_t>(B) * S, OW = static_cast<size_t>(H) * hd, W = 3 * OW;
  const size_t bf = sizeof(__nv_bfloat16);
  DeviceMem qkv(N * W * bf), dqkv(N * W * bf), out(N * OW * bf), dout(N * OW * bf);
  DeviceMem lse(static_cast<size_t>(B) * H * S * sizeof(float));
  const size_t ws_bytes = kernels::attention_tc_backward_workspace_bytes(B, S, H, hd);
  DeviceMem ws(ws_bytes);
  fill_random_bf16(qkv.as<__nv_bfloat16>(), N * W, 1);
  fill_random_bf16(dout.as<__nv_bfloat16>(), N * OW, 2);

  auto forward = [&] {
    kernels::attention_tc_forward(out.as<__nv_bfloat16>(), lse.as<float>(), qkv.as<__nv_bfloat16>(),
                                  B, S, H, hd, nullptr);
  };
  auto backward = [&] {
    kernels::attention_tc_backward(
        dqkv.as<__nv_bfloat16>(), dout.as<__nv_bfloat16>(), out.as<__nv_bfloat16>(),
        lse.as<float>(), qkv.as<__nv_bfloat16>(), B, S, H, hd, ws.as<void>(), ws_bytes, nullptr);
  };
  AttentionBenchResult r;
  r.B = B, r.S = S, r.H = H, r.hd = hd, r.warmup = warmup, r.reps = reps;
  forward();  // out and lse for the backward, whatever warmup is
  r.forward_ms = time_ms(forward, warmup, reps);
  r.backward_ms = time_ms(backward, warmup, reps);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  r.forward_tflops = attention_forward_flops(B, S, H, hd) / (r.forward_ms * 1e-3) / 1e12;
  r.backward_tflops = attention_backward_flops(B, S, H, hd) / (r.backward_ms * 1e-3) / 1e12;
  return r;
}

#else  // !MOE_WITH_CUDA

AttentionBenchResult bench_attention(int, int, int, int, int, int) {
  throw InternalError("bench_attention: this build has no CUDA");
}

#endif  // MOE_WITH_CUDA

int run_attention_bench(const Config& cfg, const std::string& config_path, int64_t warmup64,
                        int64_t reps64, std::optional<double> peak_tflops,
                        const std::string& json_path) {
#ifndef MOE_WITH_CUDA
  throw InputError(
      "--op attention: this build has no CUDA (the tensor-core attention needs a GPU)");
#endif
  if (!cuda_available()) throw InputError("--op attention: no CUDA device visible");
  if (warmup64 > 1000000 || reps64 > 1000000)
    throw InputError("--op attention: at most 10^6 --warmup and --steps calls");
  const int warmup = static_cast<int>(warmup64), reps = static_cast<int>(reps64);
  const int B = cfg.train.micro_batch, S = cfg.model.seq_len, H = cfg.model.heads;
  const int hd = cfg.model.head_dim();
  if (hd != 64 && hd != 128)
    throw InputError("--op attention: head_dim " + std::to_string(hd) +
                     " (model.hidden / model.heads) is not supported by the tensor-core kernels "
                     "(64 or 128)");
#ifdef MOE_WITH_CUDA
  if (!kernels::attention_tc_supported(hd))
    throw InputError("--op attention: head_dim " + std::to_string(hd) +
                     ": this device has too little shared memory per block for the tensor-core "
                     "kernels (docs/cuda.md); training takes the fp32 attention there");
#endif
  std::ofstream json_out;
  if (!json_path.empty()) {
    json_out.open(json_path);
    if (!json_out) throw InputError("--json: cannot write " + json_path);
  }
  const GpuInfo gpu = gpu_info(0);
  std::optional<double> peak = peak_tflops;
  if (!peak && gpu.peak_bf16_tflops > 0) peak = gpu.peak_bf16_tflops;

  const AttentionBenchResult r = bench_attention(B, S, H, hd, warmup, reps);
  auto share = [&](double tflops) {
    char buf[64];
    if (peak)
      std::snprintf(buf, sizeof buf, "%5.1f%% of %.1f TFLOP/s bf16 peak", 100.0 * tflops / *peak,
                    *peak);
    else
      std::snprintf(buf, sizeof buf, "peak n/a (pass --peak-tflops)");
    return std::string(buf);
  };
  std::printf(
      "note: the tensor-core attention kernels have not yet been validated on a GPU; "
      "run test_gpu_attention_tc first (docs/cuda.md)\n");
  std::printf("moe-bench --op attention: %s\n", config_path.c_str());
  std::printf("  device       %s\n", gpu.name.c_str());
  std::printf("  shape        B %d (train.micro_batch) x S %d x H %d x hd %d, causal, bf16\n", B, S,
              H, hd);
  std::printf("  calls        %d warm-up + %d timed each\n\n", warmup, reps);
  std::printf("  forward   %9.3f ms  %7.1f TFLOP/s  %s\n", r.forward_ms, r.forward_tflops,
              share(r.forward_tflops).c_str());
  std::printf("  backward  %9.3f ms  %7.1f TFLOP/s  %s\n", r.backward_ms, r.backward_tflops,
              share(r.backward_tflops).c_str());
  std::printf("  (FLOPs: forward 4 B H S^2 hd / 2 = %.4g, backward 2.5 x forward; docs/bench.md)\n",
              attention_forward_flops(B, S, H, hd));
  std::fflush(stdout);

  if (!json_path.empty()) {
    nlohmann::json j;
    j["op"] = "attention";
    j["config"] = config_path;
    j["device"] = gpu.name;
    j["B"] = B;
    j["S"] = S;
    j["H"] = H;
    j["head_dim"] = hd;
    j["warmup"] = warmup;
    j["reps"] = reps;
    j["forward_flops"] = attention_forward_flops(B, S, H, hd);
    j["backward_flops"] = attention_backward_flops(B, S, H, hd);
    j["forward_ms"] = r.forward_ms;
    j["backward_ms"] = r.backward_ms;
    j["forward_tflops"] = r.forward_tflops;
    j["backward_tflops"] = r.backward_tflops;
    j["peak_tflops"] = peak ? nlohmann::json(*peak) : nlohmann::json(nullptr);
    json_out << j.dump(2) << "\n";
    json_out.close();
    if (!json_out) throw InputError("--json: cannot write " + json_path);
  }
  return 0;
}

}  // namespace moe
