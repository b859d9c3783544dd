// The fan-out the trainer reports with expert parallelism (StepStats
// fanout_ranks / fanout_nodes), against a reference counted here from each
// MoE layer's top-K selection with the placement of comm/topology.h: expert
// e on world rank ep_group * ep_size + Topology::owner_of(e), that rank on
// node world_rank / ranks_per_node. Integers throughout, so the means are
// compared exactly (the same integer sums divided once).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "comm/topology.h"
#include "data/token_source.h"
#include "support/mpi_small_config.h"
#include "support/mpi_test_main.h"
#include "train/trainer.h"

namespace moe {
namespace {

// One micro-batch per rank: the routers' last selection is the whole step's.
Config small_config(int world, int ep_size) {
  Config c = test::mpi_small_config(BalanceMethod::LossFree);
  c.train.micro_batch = c.train.global_batch / world;
  c.parallel.ep_size = ep_size;
  return c;
}

struct Reference {
  int64_t tokens = 0, ranks_sum = 0, nodes_sum = 0, ranks_max = 0, nodes_max = 0;
};

// This rank's tokens, all MoE layers; summed over the world (the maxima as
// counts of tokens at each value, which sum).
Reference reference(Trainer<float>& t, const Config& c, const Topology& topo, int ranks_per_node,
                    Comm& world) {
  const int K = c.moe.top_k, N = c.train.micro_batch * c.model.seq_len;
  std::vector<int64_t> v(4 + 2 * size_t(K + 1), 0);  // tokens, sums, [ranks hist], [nodes hist]
  for (int m = 0; m < t.model().moe_layers(); ++m) {
    const int32_t* idx = t.model().router(m).expert_idx();  // CPU backend: host memory
    for (int n = 0; n < N; ++n) {
      std::set<int> ranks, nodes;
      for (int k = 0; k < K; ++k) {
        const int w = topo.ep_group * topo.ep_size + topo.owner_of(idx[size_t(n) * K + k]);
        ranks.insert(w);
        nodes.insert(w / ranks_per_node);
      }
      v[0] += 1;
      v[1] += int64_t(ranks.size());
      v[2] += int64_t(nodes.size());
      v[4 + ranks.size()] += 1;
      v[4 + K + 1 + nodes.size()] += 1;
    }
  }
  world.allreduce_sum(v.data(), v.size());
  Reference r{v[0], v[1], v[2], 0, 0};
  for (int x = 0; x <= K; ++x) {
    if (v[4 + x] > 0) r.ranks_max = x;
    if (v[4 + K + 1 + x] > 0) r.nodes_max = x;
  }
  return r;
}

void check(const Config& c, int ranks_per_node) {
  Comm& world = test::world();
  const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
  Communicators comms = make_communicators(world, topo);
  auto be = make_cpu_backend<float>(1);
  auto data = make_train_source(c);
  Trainer<float> t(c, *be, world, *data, nullptr, comms.ep.get(), comms.replica.get());
  t.set_node(world.rank() / ranks_per_node);
  const bool across_nodes = c.parallel.ep_size > ranks_per_node;
  const int bound = std::min(c.moe.top_k, c.parallel.ep_size);
  for (int64_t s = 0; s < 3; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    const StepStats st = t.train_step(s);
    const Reference want = reference(t, c, topo, ranks_per_node, world);
    ASSERT_EQ(want.tokens, int64_t(c.train.global_batch) * c.model.seq_len * c.model.moe_layers());
    ASSERT_TRUE(st.fanout_ranks.has_value());
    EXPECT_EQ(st.fanout_ranks->mean, double(want.ranks_sum) / double(want.tokens));
    EXPECT_EQ(st.fanout_ranks->max, want.ranks_max);
    EXPECT_GE(st.fanout_ranks->mean, 1.0);
    EXPECT_LE(st.fanout_ranks->mean, st.fanout_ranks->max);
    EXPECT_LE(st.fanout_ranks->max, bound);
    ASSERT_EQ(st.fanout_nodes.has_value(), across_nodes);
    if (across_nodes) {
      EXPECT_EQ(st.fanout_nodes->mean, double(want.nodes_sum) / double(want.tokens));
      EXPECT_EQ(st.fanout_nodes->max, want.nodes_max);
      EXPECT_LE(st.fanout_nodes->mean, st.fanout_ranks->mean);
    }
  }
}

TEST(Fanout, MatchesTheSelectionOnTheTopologysPlacement) {
  const int W = test::world().size();
  for (int ep_size : std::set<int>{2, W})
    for (int ranks_per_node : {1, 2}) {
      SCOPED_TRACE("ep_size " + std::to_string(ep_size) + ", ranks per node " +
                   std::to_string(ranks_per_node));
      check(small_config(W, ep_size), ranks_per_node);
    }
}

// Groups aligned with the EP ranks (n_group = ep_size): a token reaches at
// most topk_group ranks; with one group, exactly one.
TEST(Fanout, GroupLimitedRoutingBoundsIt) {
  const int W = test::world().size();
  for (int ep_size : std::set<int>{2, W}) {
    SCOPED_TRACE("ep_size " + std::to_string(ep_size));
    Config c = small_config(W, ep_size);
    c.moe.n_group = ep_size;
    c.moe.topk_group = 1;
    Comm& world = test::world();
    const Topology topo(world.rank(), world.size(), ep_size, c.moe.n_routed);
    Communicators comms = make_communicators(world, topo);
    auto be = make_cpu_backend<float>(1);
    auto data = make_train_source(c);
    Trainer<float> t(c, *be, world, *data, nullptr, comms.ep.get(), comms.replica.get());
    for (int64_t s = 0; s < 3; ++s) {
      const StepStats st = t.train_step(s);
      ASSERT_TRUE(st.fanout_ranks.has_value());
      EXPECT_EQ(st.fanout_ranks->max, 1);
      EXPECT_EQ(st.fanout_ranks->mean, 1.0);
    }
  }
}

}  // namespace
}  // namespace moe
