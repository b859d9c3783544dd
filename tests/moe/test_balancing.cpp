// Loss-Free bias updates, MaxVio and routing invariants against hand-computed
// cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "backend/backend.h"
#include "data/token_source.h"
#include "model/transformer.h"
#include "moe/balancer.h"
#include "moe/load_stats.h"
#include "support/route_cases.h"
#include "train/trainer.h"

namespace moe {
namespace {

// Two MoE layers, four experts. Layer 0: mean 4, errors e = {-6, 2, 0, 4}.
// Layer 1: perfectly balanced, e = 0.
const std::vector<int64_t> kCounts = {10, 2, 4, 0, 5, 5, 5, 5};

BalanceConfig lf(UpdateRule rule, BiasMode mode, double u) {
  BalanceConfig b;
  b.method = BalanceMethod::LossFree;
  b.update_rule = rule;
  b.bias_mode = mode;
  b.update_rate = u;
  return b;
}

void expect_bias(const Balancer& b, const std::vector<float>& want) {
  ASSERT_EQ(b.bias().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(b.bias()[i], want[i]) << "entry " << i;
}

TEST(LossFree, SignRuleAdditive) {
  Balancer b(lf(UpdateRule::Sign, BiasMode::Additive, 0.001), 2, 4);
  expect_bias(b, {0, 0, 0, 0, 0, 0, 0, 0});
  b.update(kCounts);
  // Overloaded expert 0 goes down by u, underloaded 1 and 3 up, exact 2 stays.
  expect_bias(b, {-0.001f, 0.001f, 0.0f, 0.001f, 0, 0, 0, 0});
  b.update(kCounts);
  expect_bias(b, {-0.002f, 0.002f, 0.0f, 0.002f, 0, 0, 0, 0});
}

TEST(LossFree, ProportionalRule) {
  Balancer b(lf(UpdateRule::Proportional, BiasMode::Additive, 0.01), 2, 4);
  b.update(kCounts);
  // u * e / mean = 0.01 * {-6, 2, 0, 4} / 4
  expect_bias(b, {-0.015f, 0.005f, 0.0f, 0.01f, 0, 0, 0, 0});
}

TEST(LossFree, MultiplicativeStartsAtOne) {
  Balancer b(lf(UpdateRule::Sign, BiasMode::Multiplicative, 0.01), 2, 4);
  expect_bias(b, {1, 1, 1, 1, 1, 1, 1, 1});
  b.update(kCounts);
  expect_bias(b, {0.99f, 1.01f, 1.0f, 1.01f, 1, 1, 1, 1});
}

TEST(LossFree, MeanCentring) {
  BalanceConfig c = lf(UpdateRule::Sign, BiasMode::Additive, 0.001);
  c.center_bias = true;
  Balancer b(c, 2, 4);
  b.update(kCounts);
  // {-1, 1, 0, 1} * u has mean 0.25u; centred: {-1.25, 0.75, -0.25, 0.75} * u
  expect_bias(b, {-0.00125f, 0.00075f, -0.00025f, 0.00075f, 0, 0, 0, 0});
}

TEST(LossFree, EmptyLayerLeftAlone) {
  Balancer b(lf(UpdateRule::Sign, BiasMode::Additive, 0.001), 1, 4);
  b.update({0, 0, 0, 0});
  expect_bias(b, {0, 0, 0, 0});
}

TEST(LossFree, OtherMethodsNeverMoveTheBias) {
  for (BalanceMethod m : {BalanceMethod::AuxLoss, BalanceMethod::None}) {
    BalanceConfig c = lf(UpdateRule::Sign, BiasMode::Additive, 0.001);
    c.method = m;
    Balancer b(c, 2, 4);
    b.update(kCounts);
    expect_bias(b, {0, 0, 0, 0, 0, 0, 0, 0});
    EXPECT_FALSE(b.updates_bias());
  }
}

TEST(MaxVio, HandComputed) {
  // Layer 0: (10 - 4) / 4 = 1.5; layer 1: 0.
  const MaxVio mv = max_violation_layers(kCounts, 2, 4);
  ASSERT_EQ(mv.per_layer.size(), 2u);
  EXPECT_DOUBLE_EQ(mv.per_layer[0], 1.5);
  EXPECT_DOUBLE_EQ(mv.per_layer[1], 0.0);
  EXPECT_DOUBLE_EQ(mv.mean, 0.75);
  // All tokens on one of 8 experts: (8 - 1) / 1 = 7.
  const int64_t one[8] = {0, 0, 16, 0, 0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(max_violation(one, 8), 7.0);
  const int64_t none[3] = {0, 0, 0};
  EXPECT_DOUBLE_EQ(max_violation(none, 3), 0.0);
}

// In a whole model: the bias changes which experts are selected, but the gates
// stay the unbiased scores of the selected experts; a bias that shifts every
// expert equally changes nothing at all (loss and gradients bit-identical).
// Exact because the bias enters nowhere but the selection keys: with the same
// selection both runs are the same computation (same model, shapes, one
// thread). The keys s + 0.25 are rounded in double, which is monotone, so it
// can merge two keys into a tie (then the lower index goes first) but never
// reverse them; that needs two of a token's scores within 2^-52 of each
// other, odds ~1e-13 for these 12 tokens x 15 pairs of scores spread over
// (0, 1). The gate is s * route_scale (1, no normalisation): s exactly.
TEST(Routing, BiasSelectsButNeverGates) {
  Config c;
  c.model = {.vocab_size = 13, .hidden = 8, .heads = 2, .layers = 1, .first_dense_layers = 0,
             .dense_intermediate = 8, .seq_len = 6, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.5};
  c.moe.n_shared = 1;
  c.moe.n_routed = 6;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 4;
  auto be = make_cpu_backend<double>(1);
  Transformer<double> m(c, *be, 2);
  m.init_params(7);
  std::vector<int32_t> tok(12), tgt(12);
  for (int i = 0; i < 12; ++i) tok[i] = i % 13, tgt[i] = (3 * i + 1) % 13;
  ForwardOptions opt;
  opt.training = true;
  opt.ce_grad_scale = 1.0;

  Balancer balancer(c.balance, m.moe_layers(), c.moe.n_routed, be.get());
  m.use_router_bias(balancer.device_bias());
  auto run = [&](const std::vector<float>& bias) {
    balancer.set_bias(bias);
    m.params().zero_grads();
    const double loss = m.forward(tok.data(), tgt.data(), 2, opt).loss_sum;
    const Router<double>& r = m.router(0);
    std::vector<int32_t> idx(r.expert_idx(), r.expert_idx() + 24);
    for (int t = 0; t < 12; ++t)
      for (int k = 0; k < 2; ++k)
        EXPECT_EQ(r.gates()[t * 2 + k], r.scores()[t * 6 + idx[t * 2 + k]]);
    m.backward();
    return std::make_tuple(loss, idx, m.params().grads_to_host());
  };
  const auto [loss0, idx0, grad0] = run({0, 0, 0, 0, 0, 0});
  const auto [loss1, idx1, grad1] = run({0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f});
  EXPECT_EQ(loss0, loss1);
  EXPECT_EQ(idx0, idx1);
  EXPECT_EQ(grad0, grad1);
  // A large bias on expert 5 makes every token pick it.
  const auto [loss2, idx2, grad2] = run({0, 0, 0, 0, 0, 10.0f});
  for (int t = 0; t < 12; ++t) EXPECT_EQ(idx2[t * 2], 5);
  EXPECT_NE(idx0, idx2);
  EXPECT_NE(loss0, loss2);
}

// Group-limited routing in a training run (moe.n_group 4 of 2 experts,
// moe.topk_group 2, top-3): after every Trainer step, the last micro-batch's
// routing in each MoE layer reaches at most 2 groups per token and is the
// reference's grouped top-K of that forward's scores and bias (the bias
// before the step's update), while Loss-Free (u 0.1) drives biases negative.
// The same run with n_group 1 reaches 3 groups for some token.
TEST(Routing, GroupLimitedTrainingReachesAtMostTopkGroupGroups) {
  auto config = [](int n_group, int topk_group) {
    Config c;
    c.model = {.vocab_size = 48, .hidden = 32, .heads = 2, .layers = 3, .first_dense_layers = 1,
               .dense_intermediate = 40, .seq_len = 16, .rope_theta = 10000, .norm_eps = 1e-6,
               .init_std = 0.3};
    c.moe.n_shared = 1;
    c.moe.n_routed = 8;
    c.moe.top_k = 3;
    c.moe.expert_intermediate = 12;
    c.moe.n_group = n_group;
    c.moe.topk_group = topk_group;
    c.balance.update_rate = 0.1;
    c.train.steps = 6;
    c.train.global_batch = 4;
    c.train.micro_batch = 2;
    c.train.lr = 5e-3;
    c.train.warmup_steps = 1;
    c.train.min_lr = 5e-4;
    c.train.threads = 2;
    c.data.synthetic_branching = 3;
    return c;
  };
  const int E = 8, K = 3, N = 2 * 16;
  int most_plain = 0;
  for (const auto& [G, TG] : {std::pair{4, 2}, std::pair{1, 1}}) {
    SCOPED_TRACE("n_group " + std::to_string(G));
    const Config c = config(G, TG);
    auto be = make_cpu_backend<float>(c.train.threads);
    LocalComm comm;
    auto data = make_train_source(c);
    Trainer<float> t(c, *be, comm, *data);
    bool negative_key = false;
    for (int64_t step = 0; step < c.train.steps; ++step) {
      const std::vector<float> bias = t.balancer().bias();  // what this step routes with
      const StepStats st = t.train_step(step);
      ASSERT_TRUE(std::isfinite(st.loss));
      for (int l = 0; l < t.model().moe_layers(); ++l) {
        const Router<float>& r = t.model().router(l);
        const std::vector<int32_t> idx(r.expert_idx(), r.expert_idx() + N * K);
        const std::vector<float> s(r.scores(), r.scores() + N * E);
        const std::vector<float> b(bias.begin() + l * E, bias.begin() + (l + 1) * E);
        for (int i = 0; i < N * E; ++i) negative_key |= s[i] + b[i % E] < 0;
        const auto touched = test::groups_touched(idx, N, E, K, 4);
        const int most = *std::max_element(touched.begin(), touched.end());
        if (G == 4) {
          EXPECT_LE(most, 2) << "step " << step << " layer " << l;
          EXPECT_EQ(idx, test::reference_group_topk(s, b, N, E, K, false, 4, 2))
              << "step " << step << " layer " << l;
        } else {
          most_plain = std::max(most_plain, most);
        }
      }
    }
    EXPECT_TRUE(negative_key);  // kept keys below 0.0 occurred (the -inf vs 0.0 case)
  }
  EXPECT_EQ(most_plain, 3);  // without groups some token reaches 3 groups of 2
}

}  // namespace
}  // namespace moe
