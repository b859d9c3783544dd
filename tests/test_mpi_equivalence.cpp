// The main multi-rank test (DESIGN.md section 4): a run on W ranks with
// expert-parallel size P sees the same global batch each step as a run on
// one rank, so it must give the same losses (up to float summation order),
// the same per-expert counts, MaxVio and Loss-Free biases. Every rank also
// trains the one-rank reference itself (LocalComm) and compares.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "core/error.h"
#include "data/token_source.h"
#include "dist/topology.h"
#include "mpi_test_main.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace moe {
namespace {

Config small_config(BalanceMethod method) {
  Config c;
  c.model = {.vocab_size = 40, .hidden = 16, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 24, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.05};
  c.moe.n_shared = 1;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 8;
  c.balance.method = method;
  c.balance.update_rate = 0.01;
  c.balance.aux_alpha = 0.01;
  c.train.steps = 6;
  c.train.global_batch = 8;
  c.train.micro_batch = 2;
  c.train.lr = 5e-3;
  c.train.warmup_steps = 1;
  c.train.min_lr = 5e-4;
  c.train.threads = 1;
  c.data.synthetic_branching = 3;
  return c;
}

struct Trace {
  std::vector<double> loss, aux, grad_norm, maxvio, maxvio_compute;
  std::vector<std::vector<int64_t>> counts;
  std::vector<float> bias;
};

Trace record(Trainer<float>& t, int64_t steps) {
  Trace tr;
  for (int64_t s = 0; s < steps; ++s) {
    const StepStats st = t.train_step(s);
    tr.loss.push_back(st.loss);
    tr.aux.push_back(st.aux_loss);
    tr.grad_norm.push_back(st.grad_norm);
    tr.maxvio.push_back(st.maxvio_batch);
    tr.maxvio_compute.push_back(st.maxvio_compute);
    tr.counts.push_back(st.counts);
  }
  tr.bias = t.balancer().bias();
  return tr;
}

Trace single_rank(const Config& c) {
  auto be = make_cpu_backend<float>(1);
  LocalComm comm;
  auto data = make_train_source(c);
  Trainer<float> t(c, *be, comm, *data);
  return record(t, c.train.steps);
}

Trace multi_rank(const Config& c, Comm& world) {
  const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
  Communicators comms = make_communicators(world, topo);
  auto be = make_cpu_backend<float>(1);
  auto data = make_train_source(c);
  Trainer<float> t(c, *be, world, *data, nullptr, comms.ep.get(), comms.replica.get());
  return record(t, c.train.steps);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-12); }

void expect_same_run(const Trace& got, const Trace& want, double loss_tol) {
  ASSERT_EQ(got.loss.size(), want.loss.size());
  for (size_t s = 0; s < want.loss.size(); ++s) {
    EXPECT_LT(rel(got.loss[s], want.loss[s]), loss_tol) << "step " << s;
    EXPECT_LT(rel(got.aux[s] + 1, want.aux[s] + 1), loss_tol) << "step " << s;
    EXPECT_LT(rel(got.grad_norm[s], want.grad_norm[s]), 1e-4) << "step " << s;
    EXPECT_EQ(got.counts[s], want.counts[s]) << "step " << s;
    EXPECT_EQ(got.maxvio[s], want.maxvio[s]) << "step " << s;
  }
  EXPECT_EQ(got.bias, want.bias);
}

void check(BalanceMethod method, int ep_size) {
  Comm& world = test::world();
  if (world.size() % ep_size != 0) GTEST_SKIP() << "ep_size does not divide the world size";
  Config c = small_config(method);
  c.parallel.ep_size = ep_size;
  const Trace want = single_rank(c);
  const Trace got = multi_rank(c, world);
  expect_same_run(got, want, 1e-5);
  // Without expert parallelism a computation batch is one micro-batch of one
  // rank: the same micro-batches as the one-rank run's, split over ranks.
  if (ep_size == 1) {
    for (size_t s = 0; s < want.loss.size(); ++s)
      EXPECT_NEAR(got.maxvio_compute[s], want.maxvio_compute[s], 1e-12) << "step " << s;
  }
}

// One micro-batch per rank and every rank in one EP group: the computation
// batch is the whole global batch, so its MaxVio is MaxVio_batch.
TEST(Equivalence, ComputationBatchOfOneEpGroupIsTheGlobalBatch) {
  Comm& world = test::world();
  Config c = small_config(BalanceMethod::LossFree);
  c.parallel.ep_size = world.size();
  c.train.global_batch = c.train.micro_batch * world.size();
  const Trace got = multi_rank(c, world);
  for (size_t s = 0; s < got.loss.size(); ++s) {
    EXPECT_NEAR(got.maxvio_compute[s], got.maxvio[s], 1e-12) << "step " << s;
    EXPECT_GT(got.maxvio[s], 0.0) << "step " << s;
  }
}

TEST(Equivalence, LossFreeDataParallel) { check(BalanceMethod::LossFree, 1); }
TEST(Equivalence, LossFreeExpertParallel2) { check(BalanceMethod::LossFree, 2); }
TEST(Equivalence, LossFreeExpertParallelAll) { check(BalanceMethod::LossFree, test::world().size()); }
TEST(Equivalence, AuxLossDataParallel) { check(BalanceMethod::AuxLoss, 1); }
TEST(Equivalence, AuxLossExpertParallelAll) { check(BalanceMethod::AuxLoss, test::world().size()); }

// The in-place paths moe-train uses with NCCL on GPUs
// (Trainer::use_device_comms: gradients summed and MoE rows exchanged in
// backend memory, no host staging), driven here by the MPI communicators: on
// the CPU, backend memory is host memory, so MPI can stand in for NCCL. Same
// run as one rank, data- and expert-parallel.
TEST(Equivalence, DeviceComms) {
  Comm& world = test::world();
  for (int ep_size : std::set<int>{1, 2, world.size()}) {
    if (world.size() % ep_size != 0) continue;
    SCOPED_TRACE("ep_size " + std::to_string(ep_size));
    Config c = small_config(BalanceMethod::LossFree);
    c.parallel.ep_size = ep_size;
    const Trace want = single_rank(c);
    const Topology topo(world.rank(), world.size(), ep_size, c.moe.n_routed);
    Communicators comms = make_communicators(world, topo);
    auto be = make_cpu_backend<float>(1);
    auto data = make_train_source(c);
    Trainer<float> t(c, *be, world, *data, nullptr, comms.ep.get(), comms.replica.get());
    t.use_device_comms(&world, comms.ep.get(), comms.replica.get());
    expect_same_run(record(t, c.train.steps), want, 1e-5);
    if (ep_size > 1) {  // expert parallelism needs all three
      EXPECT_THROW(t.use_device_comms(&world), InternalError);
    }
  }
}

// Adversarial routing: a selection bias that sends every token to experts 6
// and 7 (one rank of the EP group gets all rows, the others none).
TEST(Equivalence, AllTokensOnOneRanksExperts) {
  Comm& world = test::world();
  Config c = small_config(BalanceMethod::None);
  c.parallel.ep_size = world.size();
  std::vector<float> bias(size_t(c.model.moe_layers()) * c.moe.n_routed, 0.0f);
  for (int l = 0; l < c.model.moe_layers(); ++l) bias[l * 8 + 6] = bias[l * 8 + 7] = 5.0f;

  auto run = [&](Comm& comm, Comm* ep, Comm* replica) {
    auto be = make_cpu_backend<float>(1);
    auto data = make_train_source(c);
    Trainer<float> t(c, *be, comm, *data, nullptr, ep, replica);
    t.balancer().set_bias(bias);
    t.model().set_router_bias(bias);
    return record(t, 3);
  };
  LocalComm local;
  const Trace want = run(local, nullptr, nullptr);
  const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
  Communicators comms = make_communicators(world, topo);
  const Trace got = run(world, comms.ep.get(), comms.replica.get());
  for (const auto& step : want.counts)
    for (int e = 0; e < 6; ++e) EXPECT_EQ(step[e], 0);
  expect_same_run(got, want, 1e-5);
}

// A checkpoint written by an expert-parallel run holds every expert (rank 0
// gathers them) and resumes on one rank exactly where the EP run continues.
TEST(Equivalence, ExpertParallelCheckpointLoadsOnOneRank) {
  Comm& world = test::world();
  Config c = small_config(BalanceMethod::LossFree);
  c.parallel.ep_size = world.size();
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("moe_mpi_ckpt_" + std::to_string(world.size())))
                              .string();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
  world.barrier();
  c.checkpoint.dir = dir;
  const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
  Communicators comms = make_communicators(world, topo);
  auto be = make_cpu_backend<float>(1);
  auto data = make_train_source(c);
  Trainer<float> ep_run(c, *be, world, *data, nullptr, comms.ep.get(), comms.replica.get());
  record(ep_run, 3);
  const std::string path = ep_run.save_checkpoint();
  world.barrier();
  std::vector<double> ep_next;
  for (int64_t s = 3; s < 5; ++s) ep_next.push_back(ep_run.train_step(s).loss);

  LocalComm local;
  auto be1 = make_cpu_backend<float>(1);
  Trainer<float> one(c, *be1, local, *data);
  one.resume_from(find_latest_checkpoint(dir));
  EXPECT_EQ(one.next_step(), 3);
  for (int64_t s = 3; s < 5; ++s)
    EXPECT_LT(rel(one.train_step(s).loss, ep_next[size_t(s - 3)]), 1e-5) << "step " << s;
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moe
