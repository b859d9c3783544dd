// NaN or Inf put where routing reads it, for the CPU test (test_checkpoint)
// and its CUDA twin (test_gpu_backend): a stretch of a parameter (the MoE
// input's RMSNorm weight, a router row) or of the Loss-Free bias.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace moe::test {

struct NonFiniteCase {
  const char* what;
  const char* param;  // "" for the Loss-Free bias
  size_t first, count;
  float value;
};

// Runs step `step` of t with the case's value in place and checks that it is
// a skipped step in which every (token, slot) still went to a real expert
// (`pairs_per_layer` of them per MoE layer) and nothing changed, bit for bit;
// then puts the good values back.
template <typename A>
void expect_skipped_step(Trainer<float, A>& t, int64_t step, const NonFiniteCase& cs,
                         int64_t pairs_per_layer) {
  ParamSet<float>& ps = t.model().params();
  const std::vector<float> good = ps.params_to_host(), good_bias = t.balancer().bias();
  std::vector<float> poisoned = good, poisoned_bias = good_bias;
  if (*cs.param) {
    const ParamInfo& info = ps.info(ps.find(cs.param));
    ASSERT_LE(cs.first + cs.count, info.numel);
    std::fill_n(poisoned.begin() + info.offset + cs.first, cs.count, cs.value);
    ps.params_from_host(poisoned);
  } else {
    ASSERT_LE(cs.first + cs.count, poisoned_bias.size());
    std::fill_n(poisoned_bias.begin() + cs.first, cs.count, cs.value);
    t.balancer().set_bias(poisoned_bias);
  }
  const int64_t skipped_before = t.state().skipped_steps;

  const StepStats st = t.train_step(step);
  EXPECT_TRUE(st.skipped);
  const int E = t.balancer().experts();
  ASSERT_EQ(st.counts.size(), size_t(t.balancer().layers()) * E);
  for (int l = 0; l < t.balancer().layers(); ++l) {
    int64_t sum = 0;
    for (int e = 0; e < E; ++e) {
      EXPECT_GE(st.counts[size_t(l * E + e)], 0);
      sum += st.counts[size_t(l * E + e)];
    }
    EXPECT_EQ(sum, pairs_per_layer) << "MoE layer " << l;
  }
  const std::vector<float> after = ps.params_to_host();
  EXPECT_EQ(std::memcmp(after.data(), poisoned.data(), after.size() * sizeof(float)), 0);
  const std::vector<float>& bias_after = t.balancer().bias();
  EXPECT_EQ(std::memcmp(bias_after.data(), poisoned_bias.data(), bias_after.size() * sizeof(float)),
            0);
  EXPECT_EQ(t.state().skipped_steps, skipped_before + 1);

  ps.params_from_host(good);
  t.balancer().set_bias(good_bias);
}

}  // namespace moe::test
