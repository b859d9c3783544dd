// moe-bench --op attention: the tensor-core attention kernels
// (kernels/attention_tc.cu) timed alone with CUDA events, in TFLOP/s.
// docs/bench.md ("--op attention") states the FLOP convention.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config/config.h"

namespace moe {

// Causal attention FLOPs of one call, the FlashAttention convention: the
// forward's two matmuls (Q K^T and P V, 2 FLOPs per multiply-add) over the
// causal half of the S x S scores, 4 B H S^2 hd / 2; the backward 2.5 x that
// (its five matmuls). Recomputation (our dq kernel recomputes S and dP) is not
// counted, so these are "useful" FLOPs.
double attention_forward_flops(int B, int S, int H, int hd);
double attention_backward_flops(int B, int S, int H, int hd);

struct AttentionBenchResult {
  int B = 0, S = 0, H = 0, hd = 0, warmup = 0, reps = 0;
  double forward_ms = 0, backward_ms = 0;          // mean per call
  double forward_tflops = 0, backward_tflops = 0;  // attention_*_flops / time
};

// Times attention_tc_forward, then attention_tc_backward (on the forward's
// out and lse), each `warmup` untimed calls then `reps` calls between two CUDA
// events, on random bf16 inputs on device 0. Throws InternalError without CUDA
// (build or device) or on a CUDA error; the kernels' own checks apply (hd 64
// or 128).
AttentionBenchResult bench_attention(int B, int S, int H, int hd, int warmup, int reps);

// moe-bench --op attention: the attention of cfg (train.micro_batch,
// model.seq_len, model.heads, model.head_dim()) timed with `warmup` and
// `reps` calls; prints a table (and writes JSON to json_path unless empty)
// and returns 0. InputError (exit 2) without a CUDA build or device, for a
// head_dim the kernels do not take and for more than 10^6 calls. peak_tflops:
// the % of peak denominator, default the device's bf16 peak from the table in
// device_info.h.
int run_attention_bench(const Config& cfg, const std::string& config_path, int64_t warmup,
                        int64_t reps, std::optional<double> peak_tflops,
                        const std::string& json_path);

}  // namespace moe
