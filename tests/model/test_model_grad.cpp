// Whole-model gradient checks in double: the analytic backward of a tiny
// transformer (one dense layer + one MoE layer) against central finite
// differences of its forward objective, for every parameter element.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "backend/backend.h"
#include "config/config.h"
#include "model/transformer.h"
#include "moe/balancer.h"

namespace moe {
namespace {

Config tiny_config() {
  Config c;
  c.model.vocab_size = 11;
  c.model.hidden = 8;
  c.model.heads = 2;
  c.model.layers = 2;
  c.model.first_dense_layers = 1;
  c.model.dense_intermediate = 12;
  c.model.seq_len = 5;
  c.model.init_std = 0.5;  // large enough that router scores are well separated
  c.moe.n_shared = 1;
  c.moe.n_routed = 4;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 6;
  c.balance.method = BalanceMethod::None;
  return c;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};

Batch make_batch(const Config& c, int B) {
  Batch b;
  for (int i = 0; i < B * c.model.seq_len; ++i) {
    b.tokens.push_back((7 * i + 3) % c.model.vocab_size);
    b.targets.push_back((5 * i + 1) % c.model.vocab_size);
  }
  return b;
}

// Objective = sum of token losses + aux_scale * sum of aux group losses.
double objective(Transformer<double>& m, const Batch& b, int B, double aux_scale) {
  ForwardOptions opt;
  opt.training = true;
  opt.ce_grad_scale = 1.0;
  opt.aux_grad_scale = aux_scale;
  const ForwardResult r = m.forward(b.tokens.data(), b.targets.data(), B, opt);
  return r.loss_sum + aux_scale * r.aux_loss_sum;
}

// Every MoE layer's routing decision after the last forward.
std::vector<int32_t> routing(const Transformer<double>& m, int N) {
  std::vector<int32_t> all;
  for (int l = 0; l < m.moe_layers(); ++l) {
    const Router<double>& r = m.router(l);
    all.insert(all.end(), r.expert_idx(), r.expert_idx() + size_t(N) * r.spec().K);
  }
  return all;
}

// Returns ||fd - analytic|| / ||fd|| over all parameters. In fp64 with one
// BLAS thread: central differences err by h^2/6 |f'''| ~ 1e-13 plus the
// objective's rounding over 2h, ~2^-53 |f| / h ~ 1e-9 for |f| ~ 10 (any BLAS
// kernel changes f only in those last bits); observed 1e-9 .. 2e-9. The
// tests' 1e-6 leaves 500x; a wrong or missing backward term is orders above.
double gradient_check(const Config& c, const std::vector<float>& bias = {}) {
  auto be = make_cpu_backend<double>(1);
  const int B = 2, N = B * c.model.seq_len;
  const double aux_scale = 0.7;
  Transformer<double> model(c, *be, B);
  model.init_params(42);
  Balancer balancer(c.balance, model.moe_layers(), c.moe.n_routed, be.get());
  if (!bias.empty()) balancer.set_bias(bias);
  model.use_router_bias(balancer.device_bias());
  const Batch batch = make_batch(c, B);

  auto& ps = model.params();
  ps.zero_grads();
  objective(model, batch, B, aux_scale);
  const std::vector<int32_t> route0 = routing(model, N);
  model.backward();
  const std::vector<double> analytic = ps.grads_to_host();

  std::vector<double> theta = ps.params_to_host();
  const double h = 1e-6;
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < theta.size(); ++i) {
    const double keep = theta[i];
    theta[i] = keep + h;
    ps.params_from_host(theta);
    const double fp = objective(model, batch, B, aux_scale);
    EXPECT_EQ(routing(model, N), route0) << "perturbing parameter " << i << " changed routing";
    theta[i] = keep - h;
    ps.params_from_host(theta);
    const double fm = objective(model, batch, B, aux_scale);
    theta[i] = keep;
    const double fd = (fp - fm) / (2 * h);
    diff2 += (fd - analytic[i]) * (fd - analytic[i]);
    ref2 += fd * fd;
  }
  EXPECT_GT(ref2, 1e-6) << "degenerate check: gradient is ~0";
  const double rel = std::sqrt(diff2 / ref2);
  std::printf("  %zu parameters, relative error %.2e\n", theta.size(), rel);
  return rel;
}

TEST(ModelGrad, SigmoidGate) { EXPECT_LT(gradient_check(tiny_config()), 1e-6); }

TEST(ModelGrad, SoftmaxGate) {
  Config c = tiny_config();
  c.moe.gate = GateFn::Softmax;
  EXPECT_LT(gradient_check(c), 1e-6);
}

TEST(ModelGrad, NormalizedScaledGatesNoSharedExpert) {
  Config c = tiny_config();
  c.moe.normalize_gates = true;
  c.moe.route_scale = 2.5;
  c.moe.n_shared = 0;
  EXPECT_LT(gradient_check(c), 1e-6);
}

TEST(ModelGrad, AuxLossSequenceScope) {
  Config c = tiny_config();
  c.balance.method = BalanceMethod::AuxLoss;
  c.balance.aux_alpha = 0.3;  // large so its gradient is a visible part of the total
  c.balance.aux_scope = AuxScope::Sequence;
  EXPECT_LT(gradient_check(c), 1e-6);
}

TEST(ModelGrad, AuxLossBatchScopeSoftmax) {
  Config c = tiny_config();
  c.moe.gate = GateFn::Softmax;
  c.balance.method = BalanceMethod::AuxLoss;
  c.balance.aux_alpha = 0.3;
  c.balance.aux_scope = AuxScope::Batch;
  EXPECT_LT(gradient_check(c), 1e-6);
}

TEST(ModelGrad, TwoMoeLayersAllMoe) {
  Config c = tiny_config();
  c.model.first_dense_layers = 0;
  EXPECT_LT(gradient_check(c), 1e-6);
}

TEST(ModelGrad, WithSelectionBias) {
  // A bias that changes which experts are picked: the gradient must still be
  // exactly that of the objective (bias selects, carries no gradient).
  Config c = tiny_config();
  c.balance.method = BalanceMethod::LossFree;
  EXPECT_LT(gradient_check(c, {0.4f, -0.3f, 0.0f, 0.2f}), 1e-6);
  c.balance.bias_mode = BiasMode::Multiplicative;
  EXPECT_LT(gradient_check(c, {1.5f, 0.5f, 1.0f, 0.8f}), 1e-6);
}

// The aux-loss term really contributes to the gradient (so the aux tests above
// are not passing on the token loss alone).
TEST(ModelGrad, AuxLossChangesRouterGradient) {
  Config c = tiny_config();
  auto be = make_cpu_backend<double>(1);
  const Batch batch = make_batch(c, 2);
  auto router_grad = [&](BalanceMethod method) {
    c.balance.method = method;
    c.balance.aux_alpha = 0.3;
    Transformer<double> m(c, *be, 2);
    m.init_params(42);
    m.params().zero_grads();
    objective(m, batch, 2, 1.0);
    m.backward();
    const auto g = m.params().grads_to_host();
    const ParamInfo& info = m.params().info(m.params().find("layers.1.moe.router"));
    return std::vector<double>(g.begin() + info.offset, g.begin() + info.offset + info.numel);
  };
  const auto with_aux = router_grad(BalanceMethod::AuxLoss);
  const auto without = router_grad(BalanceMethod::None);
  double diff = 0;
  for (size_t i = 0; i < with_aux.size(); ++i) diff += std::abs(with_aux[i] - without[i]);
  EXPECT_GT(diff, 1e-4);
}

}  // namespace
}  // namespace moe
