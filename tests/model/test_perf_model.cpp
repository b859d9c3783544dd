// The expected-time model (src/plan/perf_model.h): its matmul FLOPs are the
// hand count of flops.cpp (6 x the active matmul parameters), its attention
// FLOPs the causal 7/12 of the MFU convention, its seconds the stated
// roofline formula, and the device table picks the right part by name.
#include <gtest/gtest.h>

#include <string>

#include "plan/perf_model.h"
#include "config/config.h"
#include "model/flops.h"

namespace moe {
namespace {

Config one_b() {
  return load_config(std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml", {}, 1);
}

TEST(PerfModel, MatmulFlopsAreSixTimesTheActiveMatmulParameters) {
  const Config c = one_b();
  const DeviceSpec dev{"unit", 1.0, 1.0, 1.0};
  const StepExpectation x = expected_step(c, dev);
  double matmul = 0, attention = 0;
  for (const auto& p : x) matmul += p.matmul_flops + p.fp32_flops, attention += p.attention_flops;
  const double tokens = double(c.train.global_batch) * c.model.seq_len;
  const int64_t D = c.model.hidden;
  const int64_t norms = int64_t(2 * c.model.layers + 1) * D;  // no matmul
  // FLOP counts are integers below 2^53 and tokens = 2^15: exact. The
  // attention line rounds 7/12 once and the product once: <= 2 ulps, within
  // DOUBLE_EQ's 4.
  EXPECT_DOUBLE_EQ(matmul / tokens, 6.0 * double(active_parameters(c.model, c.moe) - norms));
  // Causal attention: 7/12 of the 12 x layers x hidden x seq_len the MFU counts.
  const double mfu_attention = double(train_flops_per_token(c.model, c.moe)) -
                               6.0 * double(active_parameters(c.model, c.moe));
  EXPECT_DOUBLE_EQ(attention / tokens, 7.0 / 12.0 * mfu_attention);
  EXPECT_DOUBLE_EQ(x[int(Phase::Optimizer)].bytes, 42.0 * double(total_parameters(c.model, c.moe)));
}

TEST(PerfModel, SecondsAreTheRooflineSum) {
  const Config c = one_b();
  const DeviceSpec dev{"unit", 2.0, 0.5, 4.0};
  Efficiency eff;
  eff.gemm = 0.5, eff.attention = 0.25, eff.fp32_gemm = 1.0, eff.memory = 0.5;
  for (const auto& p : expected_step(c, dev, eff)) {
    // The model's divisors (0.5 * 2 * 1e12, ...) are these exactly: the same
    // sum, so equal up to an ulp or two; 1e-12 relative is slack.
    const double want = p.matmul_flops / 1e12 + p.attention_flops / 0.5e12 +
                        p.fp32_flops / 0.5e12 + p.bytes / 2e12;
    EXPECT_NEAR(p.seconds, want, 1e-12 * want);
  }
}

TEST(PerfModel, DeviceTableByName) {
  EXPECT_EQ(device_spec("NVIDIA H100 80GB HBM3")->dram_tbps, 3.35);
  EXPECT_EQ(device_spec("NVIDIA H100 PCIe")->bf16_tflops, 756.0);
  EXPECT_EQ(device_spec("NVIDIA H200")->dram_tbps, 4.8);
  EXPECT_EQ(device_spec("NVIDIA A100-SXM4-80GB")->bf16_tflops, 312.0);
  EXPECT_FALSE(device_spec("NVIDIA H100 NVL").has_value());
  EXPECT_FALSE(device_spec("NVIDIA GeForce RTX 4090").has_value());
  EXPECT_FALSE(device_spec_by_key("h300").has_value());
}

}  // namespace
}  // namespace moe
