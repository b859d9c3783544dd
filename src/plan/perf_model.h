// The expected-time model of a training step (docs/bench.md, "Expected
// time"): per phase of the step, the FLOPs and the DRAM bytes it moves, and
// the time that takes on a given GPU at stated efficiencies. Each phase is a
// sum of parts; a matmul part runs at a fraction of the bf16 (or fp32)
// tensor peak, a memory-bound part at a fraction of the DRAM bandwidth. So
// the first GPU run can be read phase by phase against expectation
// (moe-bench prints both on a GPU of the table; --expect prints the model
// without one).
#pragma once

#include <array>
#include <optional>
#include <string>

#include "backend/backend.h"
#include "config/config.h"

namespace moe {

struct DeviceSpec {
  std::string name;
  double bf16_tflops;  // dense tensor-core peak
  double fp32_tflops;  // non-tensor fp32 peak (the router's SGEMM)
  double dram_tbps;    // DRAM bandwidth, TB/s
};

// The efficiencies the model assumes (fractions of the peaks above).
struct Efficiency {
  double gemm = 0.6;       // bf16 cuBLAS GEMMs at these shapes
  double attention = 0.4;  // the tensor-core attention kernels (issue 10's target)
  double fp32_gemm = 0.5;  // the router's fp32 SGEMM
  double memory = 0.7;     // elementwise and row-moving kernels vs DRAM bandwidth
};

struct PhaseExpectation {
  double matmul_flops = 0;     // bf16 tensor-core GEMMs
  double attention_flops = 0;  // the attention kernels (causal work, not the MFU convention)
  double fp32_flops = 0;       // fp32 GEMMs (router)
  double bytes = 0;            // DRAM traffic of the memory-bound kernels
  double seconds = 0;
};
using StepExpectation = std::array<PhaseExpectation, kPhaseCount>;  // by int(Phase)

// H100 SXM, H100 PCIe, H200, A100 by CUDA device name (as peak_bf16_dense_tflops);
// nullopt for any other device.
std::optional<DeviceSpec> device_spec(const std::string& device_name);
// "h100", "h100-pcie", "h200" or "a100" (moe-bench --expect); nullopt otherwise.
std::optional<DeviceSpec> device_spec_by_key(const std::string& key);

// One optimizer step of cfg (train.global_batch x seq_len tokens on one rank).
StepExpectation expected_step(const Config& cfg, const DeviceSpec& dev,
                              const Efficiency& eff = Efficiency{});

}  // namespace moe
