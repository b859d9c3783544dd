// train.recompute under expert parallelism: full reruns each MoE layer's
// dispatch all-to-alls in backward, and every rank of an EP group recomputes
// the same layer at the same point, so the collectives match; selective and
// full give the bits of none with the same layout (losses, aux losses, grad
// norms, counts, MaxVio, biases).
//
// Bit-exact by construction, hence the exact checks: both runs have the same
// W, ep_size and communicators (the same reduction order), the same
// micro-batches and one thread (make_cpu_backend(1)); a recompute reruns the
// same op on the same inputs in the same shapes (the stored routing and
// dispatch plan, so the expert GEMMs see the same rows in the same order),
// and the counts come from the training forward alone.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <vector>

#include "data/token_source.h"
#include "comm/topology.h"
#include "support/mpi_small_config.h"
#include "support/mpi_test_main.h"
#include "train/trainer.h"

namespace moe {
namespace {

Config small_config(BalanceMethod method) {
  Config c = test::mpi_small_config(method);
  c.train.steps = 4;
  return c;
}

using test::Trace;

// skew: every token to experts 6 and 7 (test::bias_to_experts_6_and_7).
Trace run(const Config& c, Comm& world, bool skew = false) {
  const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
  Communicators comms = make_communicators(world, topo);
  auto be = make_cpu_backend<float>(1);
  auto data = make_train_source(c);
  Trainer<float> t(c, *be, world, *data, nullptr, comms.ep.get(), comms.replica.get());
  if (skew) t.balancer().set_bias(test::bias_to_experts_6_and_7(c));
  return test::record(t, c.train.steps);
}

template <typename U>
bool same_bits(const std::vector<U>& a, const std::vector<U>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(U)) == 0;
}

void check(BalanceMethod method, bool skew = false) {
  Comm& world = test::world();
  for (int ep_size : std::set<int>{2, world.size()}) {
    if (world.size() % ep_size != 0) continue;
    SCOPED_TRACE("ep_size " + std::to_string(ep_size));
    Config c = small_config(method);
    c.parallel.ep_size = ep_size;
    const Trace want = run(c, world, skew);
    for (Recompute policy : {Recompute::Selective, Recompute::Full}) {
      SCOPED_TRACE(to_string(policy));
      c.train.recompute = policy;
      const Trace got = run(c, world, skew);
      EXPECT_TRUE(same_bits(got.loss, want.loss));
      EXPECT_TRUE(same_bits(got.aux, want.aux));
      EXPECT_TRUE(same_bits(got.grad_norm, want.grad_norm));
      EXPECT_TRUE(same_bits(got.maxvio, want.maxvio));
      EXPECT_EQ(got.counts, want.counts);
      EXPECT_TRUE(same_bits(got.bias, want.bias));
    }
  }
}

TEST(Recompute, LossFreeExpertParallelMatchesNone) { check(BalanceMethod::LossFree); }
TEST(Recompute, AuxLossExpertParallelMatchesNone) { check(BalanceMethod::AuxLoss); }
TEST(Recompute, AllTokensOnOneRanksExpertsMatchesNone) { check(BalanceMethod::None, true); }

}  // namespace
}  // namespace moe
