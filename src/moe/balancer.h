// Loss-Free Balancing (Wang et al. 2024, Algorithm 1): after every optimizer
// step, each expert's selection bias moves against its load error,
//   e_i = mean(c) - c_i;  sign rule: b_i += u * sign(e_i);
//   proportional rule: b_i += u * e_i / mean(c).
// The counts c are the step's global-batch counts (all micro-batches, all
// ranks, already all-reduced). The bias is additive (starts at 0) or
// multiplicative (starts at 1), optionally mean-centred, fp32 and identical
// on every rank. For the aux-loss baseline and `none`, it stays at its start.
#pragma once

#include <cstdint>
#include <vector>

#include "config/config.h"

namespace moe {

class Balancer {
 public:
  Balancer(const BalanceConfig& cfg, int moe_layers, int n_routed);

  // Applies one update from counts [moe_layers * n_routed]. No-op unless the
  // method is loss_free.
  void update(const std::vector<int64_t>& counts);

  const std::vector<float>& bias() const { return bias_; }  // [moe_layers * n_routed]
  void set_bias(const std::vector<float>& b);
  int layers() const { return layers_; }
  int experts() const { return E_; }
  bool updates_bias() const { return cfg_.method == BalanceMethod::LossFree; }

 private:
  BalanceConfig cfg_;
  int layers_, E_;
  std::vector<float> bias_;
};

}  // namespace moe
