#include "moe/balancer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moe {

Balancer::Balancer(const BalanceConfig& cfg, int moe_layers, int n_routed, BackendBase* be)
    : cfg_(cfg),
      layers_(moe_layers),
      E_(n_routed),
      bias_(size_t(moe_layers) * n_routed, start_value(cfg.bias_mode)),
      be_(be) {
  if (be_ && !bias_.empty()) {
    device_ = alloc_array<float>(*be_, bias_.size());
    to_device();
  }
}

Balancer::~Balancer() {
  if (device_) be_->free_bytes(device_);
}

void Balancer::to_device() {
  if (device_) be_->to_device(device_, bias_.data(), bias_.size() * sizeof(float));
}

void Balancer::set_bias(const std::vector<float>& b) {
  MOE_CHECK(b.size() == bias_.size(), "Balancer::set_bias: size mismatch");
  bias_ = b;
  to_device();
}

bool Balancer::bias_finite() const {
  return std::all_of(bias_.begin(), bias_.end(), [](float b) { return std::isfinite(b); });
}

void Balancer::update(const std::vector<int64_t>& counts) {
  MOE_CHECK(counts.size() == bias_.size(), "Balancer::update: counts size mismatch");
  if (!updates_bias()) return;
  const double u = cfg_.update_rate;
  for (int l = 0; l < layers_; ++l) {
    const int64_t* c = counts.data() + size_t(l) * E_;
    float* b = bias_.data() + size_t(l) * E_;
    int64_t total = 0;
    for (int i = 0; i < E_; ++i) total += c[i];
    if (total == 0) continue;  // nothing routed: no evidence to act on
    const double mean = double(total) / E_;
    for (int i = 0; i < E_; ++i) {
      const double err = mean - double(c[i]);
      const double step = cfg_.update_rule == UpdateRule::Sign
                              ? u * double((err > 0) - (err < 0))
                              : u * err / mean;
      b[i] = float(double(b[i]) + step);
    }
    if (cfg_.center_bias) {
      // Keeps the bias around its start value; selection is unchanged for the
      // additive bias (a common shift), and centring stops drift.
      const double start = start_value(cfg_.bias_mode);
      double mean_b = 0;
      for (int i = 0; i < E_; ++i) mean_b += b[i];
      mean_b /= E_;
      for (int i = 0; i < E_; ++i) b[i] = float(double(b[i]) - mean_b + start);
    }
  }
  to_device();
}

}  // namespace moe
