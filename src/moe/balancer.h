// Loss-Free Balancing (Wang et al. 2024, Algorithm 1): after every optimizer
// step, each expert's selection bias moves against its load error,
//   e_i = mean(c) - c_i;  sign rule: b_i += u * sign(e_i);
//   proportional rule: b_i += u * e_i / mean(c).
// The counts c are the step's global-batch counts (all micro-batches, all
// ranks, already all-reduced). The bias is additive (starts at 0) or
// multiplicative (starts at 1), optionally mean-centred, fp32 and identical
// on every rank. For the aux-loss baseline and `none`, it stays at its start.
//
// The Balancer is the one owner of the bias: the host values and, when it is
// given a backend, their copy in backend memory that the routers read
// (Transformer::use_router_bias borrows it). Every change goes through
// update() or set_bias(), which keep the two equal.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "config/config.h"

namespace moe {

class Balancer {
 public:
  // be: the backend whose memory holds the routers' copy (null: host only,
  // e.g. checkpoint tools).
  Balancer(const BalanceConfig& cfg, int moe_layers, int n_routed, BackendBase* be = nullptr);
  ~Balancer();
  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  // The bias before any update: 0 (additive) or 1 (multiplicative).
  static float start_value(BiasMode mode) { return mode == BiasMode::Multiplicative ? 1.0f : 0.0f; }

  // Applies one update from counts [moe_layers * n_routed]. No-op unless the
  // method is loss_free.
  void update(const std::vector<int64_t>& counts);

  const std::vector<float>& bias() const { return bias_; }  // [moe_layers * n_routed]
  void set_bias(const std::vector<float>& b);
  // False when a bias is NaN or infinite (a corrupt checkpoint or memory):
  // the routers would then pick by it while loss and gradients stay finite,
  // so the trainer skips such steps.
  bool bias_finite() const;
  // The copy in backend memory, fp32 [moe_layers * n_routed] (null without a backend).
  const float* device_bias() const { return device_; }
  int layers() const { return layers_; }
  int experts() const { return E_; }
  bool updates_bias() const { return cfg_.method == BalanceMethod::LossFree; }

 private:
  void to_device();

  BalanceConfig cfg_;
  int layers_, E_;
  std::vector<float> bias_;
  BackendBase* be_;
  float* device_ = nullptr;
};

}  // namespace moe
