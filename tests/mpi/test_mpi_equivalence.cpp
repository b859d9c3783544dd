// The main multi-rank test (docs/design.md section 4): a run on W ranks with
// expert-parallel size P sees the same global batch each step as a run on
// one rank, so it must give the same losses (up to float summation order),
// the same per-expert counts, MaxVio and Loss-Free biases. Every rank also
// trains the one-rank reference itself (LocalComm) and compares.
//
// What "the same" means. Every trainer here runs on make_cpu_backend(1), so
// no rounding depends on a thread count, and at W = 1 both sides are one
// computation. At W > 1 they are not bit-identical: the micro-batches'
// gradients are summed in another order (per rank, then over ranks; ZeRO-1's
// reduce-scatter at W = 4 in yet another), and under expert parallelism an
// expert's GEMMs run over the rows of the whole EP group instead of one
// micro-batch's, which OpenBLAS rounds differently (its tiling follows the
// row count).
//
// kTol (relative; losses, aux losses, gradient norms): a logit ends a chain
// of ~430 float32 roundings (the inner-product lengths along the forward: 3
// layers of ~130, norm and head), so two paths that round differently
// differ by ~sqrt(430) eps = 21 x 6e-8 = 1.3e-6 per token, a gradient entry
// (backward twice as long) by ~sqrt(860) eps = 1.8e-6. Adam's normalised
// step turns a gradient's relative rounding r into a weight change of about
// lr r (its first step, g/|g|, hardly any), so six steps stay at that level.
// 1e-5 is 5-8x that, without counting on the averaging over the batch's 64
// tokens, which takes the measured differences far lower (Haswell, Zen and
// SkylakeX kernels, W = 2 and 4, every ep_size, ZeRO-1 or not: losses and
// aux losses <= 8e-9, gradient norms <= 8e-8).
//
// Routing: counts, MaxVio_batch and the Loss-Free biases are compared
// exactly, but not by construction (except at step 0 without expert
// parallelism: the same micro-batches, weights and shapes). Top-K over the
// float keys (score + bias) flips where a token's 2nd and 3rd keys are
// closer than the paths' rounding difference. This data has none: the
// smallest such gap over its 1536 decisions (6 steps x 64 tokens x 2 MoE
// layers, Loss-Free and aux loss) is 2.1e-5, while the keys of two layouts
// differ by ~1e-7 at most (weight drift <= 5.6e-8 at W = 4, ep_size 4;
// forward rounding ~1.4e-8; measured with tests/scripts/glm4_moe_reference.py on
// exported checkpoints), 200x less. 3 of the 1536 gaps are below 1e-4, so
// another seed or model puts one within 1e-7 with odds of ~0.3%: if counts
// differ while the losses agree to kTol, look for that tie before
// suspecting the counting. Equal counts give equal MaxVio and biases bit for
// bit (the same integer arithmetic, the same +-u steps).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "core/error.h"
#include "data/token_source.h"
#include "comm/topology.h"
#include "support/mpi_small_config.h"
#include "support/mpi_test_main.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace moe {
namespace {

Config small_config(BalanceMethod method) { return test::mpi_small_config(method); }

using test::record;
using test::Trace;

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

// Derived in the header comment.
constexpr double kTol = 1e-5;

void expect_same_run(const Trace& got, const Trace& want) {
  ASSERT_EQ(got.loss.size(), want.loss.size());
  for (size_t s = 0; s < want.loss.size(); ++s) {
    EXPECT_LT(rel(got.loss[s], want.loss[s]), kTol) << "step " << s;
    // Without the aux loss both are exactly 0 (rel 0); with it (about 0.08)
    // its scores carry the logits' rounding.
    EXPECT_LT(rel(got.aux[s], want.aux[s]), kTol) << "step " << s;
    EXPECT_LT(rel(got.grad_norm[s], want.grad_norm[s]), kTol) << "step " << s;
    // Exact while no routing decision is near a tie (header comment).
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
  expect_same_run(got, want);
  // Without expert parallelism a computation batch is one micro-batch of one
  // rank: the same micro-batches as the one-rank run's, split over ranks.
  // Their counts are equal as the global ones are (header comment); the
  // per-micro-batch MaxVio (<= 7) are then summed in double in another order
  // (per rank, then over ranks): a few roundings of ~1e-15, hence 1e-12.
  if (ep_size == 1) {
    for (size_t s = 0; s < want.loss.size(); ++s)
      EXPECT_NEAR(got.maxvio_compute[s], want.maxvio_compute[s], 1e-12) << "step " << s;
  }
}

// One micro-batch per rank and every rank in one EP group: the computation
// batch is the whole global batch, so its MaxVio is MaxVio_batch. One run:
// the group's summed micro-batch counts are the global counts (integers,
// exact); the two MaxVio differ only in the order of a few double
// operations (W equal values summed and divided by W, the mean over
// layers), ~1e-16 relative on values <= 7, hence 1e-12.
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
    expect_same_run(record(t, c.train.steps), want);
    if (ep_size > 1) {  // expert parallelism needs all three
      EXPECT_THROW(t.use_device_comms(&world), InternalError);
    }
  }
}

// Adversarial routing: a selection bias that sends every token to experts 6
// and 7 (one rank of the EP group gets all rows, the others none). Here the
// counts are exact by construction: the keys of experts 6 and 7 exceed 5,
// every other key is a score below 1, whatever the rounding, and balance
// none never moves the bias. The losses are within kTol as elsewhere.
TEST(Equivalence, AllTokensOnOneRanksExperts) {
  Comm& world = test::world();
  Config c = small_config(BalanceMethod::None);
  c.parallel.ep_size = world.size();
  const std::vector<float> bias = test::bias_to_experts_6_and_7(c);

  auto run = [&](Comm& comm, Comm* ep, Comm* replica) {
    auto be = make_cpu_backend<float>(1);
    auto data = make_train_source(c);
    Trainer<float> t(c, *be, comm, *data, nullptr, ep, replica);
    t.balancer().set_bias(bias);
    return record(t, 3);
  };
  LocalComm local;
  const Trace want = run(local, nullptr, nullptr);
  const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
  Communicators comms = make_communicators(world, topo);
  const Trace got = run(world, comms.ep.get(), comms.replica.get());
  for (const auto& step : want.counts)
    for (int e = 0; e < 6; ++e) EXPECT_EQ(step[e], 0);
  expect_same_run(got, want);
}

// A checkpoint written by an expert-parallel run holds every expert (rank 0
// gathers them) and resumes on one rank exactly where the EP run continues:
// the same state (weights, moments and bias restored bit for bit) on
// another layout, so the next two losses agree to kTol, not bit for bit.
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
    EXPECT_LT(rel(one.train_step(s).loss, ep_next[size_t(s - 3)]), kTol) << "step " << s;
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}

// ---- ZeRO-1 (train.zero: 1): the same run as without it ----

// A trainer on `world` with expert parallelism ep_size (its communicators
// kept alive beside it).
struct RankRun {
  Communicators comms;
  std::unique_ptr<Backend<float>> be = make_cpu_backend<float>(1);
  std::unique_ptr<TokenSource> data;
  std::unique_ptr<Trainer<float>> trainer;
  RankRun(const Config& c, Comm& world) {
    const Topology topo(world.rank(), world.size(), c.parallel.ep_size, c.moe.n_routed);
    comms = make_communicators(world, topo);
    data = make_train_source(c);
    trainer = std::make_unique<Trainer<float>>(c, *be, world, *data, nullptr, comms.ep.get(),
                                               comms.replica.get());
  }
};

// The same layout with and without ZeRO-1: the same shapes and threads, so
// only the sums differ (at W = 1 not even those). At W = 2 the
// reduce-scatter adds the same two terms as the all-reduce (a + b = b + a):
// the gradients are bit-identical, and
// only the norm's double sum (shards, then ranks) differs, by ~1e-16, which
// reaches the update through the clipping factor (norms here are about 1,
// grad_clip 1). At W = 4 MPI may add the four terms in another order. So
// losses, aux losses and norms agree to kTol (measured <= 4e-9, 4e-9 and
// 6e-8 at W = 4) and the counts and biases exactly for the reason given in
// the header comment, not by construction.
TEST(ZeroOne, SameRunAsWithoutZero) {
  Comm& world = test::world();
  for (int ep_size : std::set<int>{1, 2, world.size()}) {
    if (world.size() % ep_size != 0) continue;
    for (BalanceMethod method : {BalanceMethod::LossFree, BalanceMethod::AuxLoss}) {
      SCOPED_TRACE("ep_size " + std::to_string(ep_size) + ", " + to_string(method));
      Config c = small_config(method);
      c.parallel.ep_size = ep_size;
      RankRun plain(c, world);
      const Trace want = record(*plain.trainer, c.train.steps);
      c.train.zero = 1;
      // Recomputation changes no bit (test_recompute), so with it on too
      // the run is the same.
      for (Recompute rec : {Recompute::None, Recompute::Full}) {
        SCOPED_TRACE(std::string("recompute ") + to_string(rec));
        c.train.recompute = rec;
        RankRun zero(c, world);
        expect_same_run(record(*zero.trainer, c.train.steps), want);
      }
    }
  }
}

// The in-place path (Optimizer::use_device_comms; NCCL on GPUs) with MPI
// standing in for NCCL on host memory, as Equivalence.DeviceComms does.
TEST(ZeroOne, DeviceCommsSameRunAsWithoutZero) {
  Comm& world = test::world();
  for (int ep_size : std::set<int>{1, world.size()}) {
    SCOPED_TRACE("ep_size " + std::to_string(ep_size));
    Config c = small_config(BalanceMethod::LossFree);
    c.parallel.ep_size = ep_size;
    RankRun plain(c, world);
    const Trace want = record(*plain.trainer, c.train.steps);
    c.train.zero = 1;
    RankRun zero(c, world);
    zero.trainer->use_device_comms(&world, zero.comms.ep.get(), zero.comms.replica.get());
    expect_same_run(record(*zero.trainer, c.train.steps), want);
  }
}

// Each rank keeps the moments of its shards only: the backend holds
// 2 x (1 - 1/W) x dense parameters fewer bytes, and the shards of all ranks
// add up to every parameter of the model once.
TEST(ZeroOne, OptimizerBytesFallAsOneOverW) {
  Comm& world = test::world();
  const int W = world.size();
  for (int ep_size : std::set<int>{1, W}) {
    SCOPED_TRACE("ep_size " + std::to_string(ep_size));
    Config c = small_config(BalanceMethod::LossFree);
    c.parallel.ep_size = ep_size;
    RankRun plain(c, world);
    c.train.zero = 1;
    RankRun zero(c, world);
    const ParamSet<float>& ps = zero.trainer->model().params();
    const size_t local = ps.size(), experts = ps.expert_size(), dense = local - experts;
    EXPECT_EQ(plain.trainer->optimizer().moment_elements(), local);
    const size_t mine = zero.trainer->optimizer().moment_elements();
    const size_t want = experts / size_t(W / ep_size) + dense / size_t(W);
    EXPECT_LE(mine, want + 2 * 64);
    EXPECT_GE(mine + 2 * 64 * size_t(W), want);
    EXPECT_EQ(plain.be->current_bytes() - zero.be->current_bytes(),
              2 * sizeof(float) * (local - mine));
    int64_t summed = int64_t(mine), model = int64_t(dense) * (world.rank() == 0) +
                                            int64_t(experts) * (world.rank() < ep_size);
    world.allreduce_sum(&summed, 1);
    world.allreduce_sum(&model, 1);
    EXPECT_EQ(summed, model);
  }
}

std::string scratch_dir(const std::string& what) {
  return (std::filesystem::temp_directory_path() /
          ("moe_zero_" + what + "_" + std::to_string(test::world().size())))
      .string();
}

// Checkpoints do not depend on the layout that wrote them: a ZeRO-1 run on
// W ranks resumes on one rank without ZeRO and on W/2 ranks with and
// without it, and a one-rank run's checkpoint resumes under ZeRO-1 on W
// ranks; every continuation matches the writer's own next steps to kTol
// (the same state continued on another layout, as in expect_same_run).
TEST(ZeroOne, CheckpointsMoveBetweenLayouts) {
  Comm& world = test::world();
  const int W = world.size();
  Config c = small_config(BalanceMethod::LossFree);
  c.train.global_batch = 8;
  c.train.micro_batch = 2;
  auto continue_from = [&](Config rc, Comm& comm, const std::string& ckpt) {
    std::vector<double> loss;
    RankRun run(rc, comm);
    run.trainer->resume_from(ckpt);
    EXPECT_EQ(run.trainer->next_step(), 3);
    for (int64_t s = 3; s < 6; ++s) loss.push_back(run.trainer->train_step(s).loss);
    return loss;
  };
  auto expect_close = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_LT(rel(got[i], want[i]), kTol) << "step " << i + 3;
  };
  // A half-size world: ranks [0, W/2) form it, the others idle.
  const bool in_half = W == 1 || world.rank() < W / 2;
  std::unique_ptr<Comm> half = world.split(in_half ? 0 : 1, world.rank());

  {  // ZeRO-1 on W ranks (experts sharded by EP over all of them) writes.
    SCOPED_TRACE("from ZeRO-1 on W ranks");
    const std::string dir = scratch_dir("from_w");
    if (world.rank() == 0) std::filesystem::remove_all(dir);
    world.barrier();
    Config wc = c;
    wc.train.zero = 1;
    wc.parallel.ep_size = W;
    wc.checkpoint.dir = dir;
    RankRun writer(wc, world);
    record(*writer.trainer, 3);
    writer.trainer->save_checkpoint();
    std::vector<double> want;
    for (int64_t s = 3; s < 6; ++s) want.push_back(writer.trainer->train_step(s).loss);
    const std::string ckpt = find_latest_checkpoint(dir);
    LocalComm local;
    Config one = c;
    expect_close(continue_from(one, local, ckpt), want);
    if (in_half) {
      for (int zero : {0, 1}) {
        SCOPED_TRACE("W/2 ranks, zero " + std::to_string(zero));
        Config hc = c;
        hc.train.zero = zero;
        hc.parallel.ep_size = half->size();
        expect_close(continue_from(hc, *half, ckpt), want);
      }
    }
    world.barrier();
    if (world.rank() == 0) std::filesystem::remove_all(dir);
  }
  {  // One rank without ZeRO writes (rank 0), ZeRO-1 on W ranks resumes.
    SCOPED_TRACE("from one rank to ZeRO-1 on W ranks");
    const std::string dir = scratch_dir("from_1");
    std::vector<double> want(3, 0.0);
    if (world.rank() == 0) {
      std::filesystem::remove_all(dir);
      Config oc = c;
      oc.checkpoint.dir = dir;
      LocalComm local;
      RankRun writer(oc, local);
      record(*writer.trainer, 3);
      writer.trainer->save_checkpoint();
      for (int64_t s = 3; s < 6; ++s) want[size_t(s - 3)] = writer.trainer->train_step(s).loss;
    }
    // Rank 0's values to every rank (the others add exact zeros).
    world.allreduce_sum(want.data(), want.size());
    for (int ep_size : std::set<int>{1, W}) {
      SCOPED_TRACE("ep_size " + std::to_string(ep_size));
      Config zc = c;
      zc.train.zero = 1;
      zc.parallel.ep_size = ep_size;
      expect_close(continue_from(zc, world, find_latest_checkpoint(dir)), want);
    }
    world.barrier();
    if (world.rank() == 0) std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace moe
