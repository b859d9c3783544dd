// The programs on a GPU as a user runs them: moe-train with train.backend
// cuda (fp32 and bf16, one rank, and two expert-parallel ranks under mpirun)
// follows the CPU run's loss curve, moe-eval evaluates its checkpoint on the
// GPU as on the CPU, and moe-bench reports CUDA-event phase times that add
// up. Skips without a device.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cuda/cuda_device.h"
#include "support/command.h"
#include "support/gpu_runs.h"
#include "support/val_shard.h"

namespace {

namespace fs = std::filesystem;
using moe::test::CommandResult;
using moe::test::run_command;

#define SKIP_WITHOUT_GPU() \
  if (moe::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible"

const std::string kBin = moe::test::bin_dir();

fs::path temp_dir(const std::string& name) { return moe::test::fresh_dir("cli_" + name); }

// 30 steps of the tiny model into d/<name>; returns the per-step losses.
std::vector<double> train(const fs::path& d, const std::string& name, const std::string& sets,
                          const std::string& launcher = "") {
  return moe::test::train_tiny(d, name, 30, sets, launcher);
}

TEST(GpuCli, TrainOnCudaFollowsTheCpuCurve) {
  SKIP_WITHOUT_GPU();
  const fs::path d = temp_dir("train");
  const auto cpu = train(d, "cpu", "--set train.backend=cpu");
  const auto fp32 = train(d, "fp32", "--set train.backend=cuda");
  // bf16 against the CPU's bf16 mode, the same semantics.
  const auto cpu_bf16 = train(d, "cpu_bf16", "--set train.backend=cpu --set train.precision=bfloat16");
  const auto bf16 = train(d, "bf16", "--set train.backend=cuda --set train.precision=bfloat16");
  ASSERT_EQ(fp32.size(), cpu.size());
  ASSERT_EQ(bf16.size(), cpu_bf16.size());
  // fp32: the CPU and the GPU differ by summation order (and expf's ulps).
  // First order, as test_cli_mpi derives for 5 steps: a gradient element
  // sums <= 1024 tokens, delta <= 1024 u = 6e-5 (2e-6 typically); AdamW moves
  // each element by <= lr delta, and lr sums to ~0.059 over steps 1-29 (20
  // warm-up steps to 3e-3); so step 30's loss moves by <= sqrt(P) |g|_2 0.059
  // delta = sqrt(2.6e5) 0.46 0.059 6e-5 = 8e-4 absolute at step 1's gradient
  // norm 0.46 (1.8e-3 at the clip, 1.0): under 1e-3 relative while the loss
  // is above 0.8 .. 1.8 (the data's entropy is ln 4 = 1.39), with a worst-case
  // delta; the typical one is 30x smaller. A routing flip (the top-K's
  // scores are not bitwise identical) matters little at init_std 0.006
  // (test_cli_mpi); for the whole trajectory, two CPU kernels (the same kind
  // of difference) end 300 steps 2e-4 apart (README.md).
  // bf16: against the CPU's bf16 mode, the same rounding points (head_dim 16:
  // no tensor-core attention), as kBf16 in test_gpu_backend.cpp.
  for (size_t s = 0; s < cpu.size(); ++s) {
    EXPECT_NEAR(fp32[s], cpu[s], 1e-3 * cpu[s]) << "fp32 step " << s + 1;
    EXPECT_NEAR(bf16[s], cpu_bf16[s], 2e-2 * cpu_bf16[s]) << "bf16 step " << s + 1;
  }
  // Same config and seed on the same GPU: the same bits (deterministic
  // kernels, the same cuBLAS algorithms for the same shapes and alignment;
  // metrics.jsonl's doubles round-trip through nlohmann::json).
  EXPECT_EQ(train(d, "fp32_again", "--set train.backend=cuda"), fp32);
  // Two ranks sharing this GPU, expert-parallel over MPI (host staging; NCCL
  // refuses two ranks on one device): the one-rank curve up to summation order.
  const auto ep2 = train(d, "ep2",
                         "--set train.backend=cuda --set parallel.ep_size=2 "
                         "--set parallel.transport=mpi",
                         "OMP_NUM_THREADS=1 timeout 300 mpirun --oversubscribe --allow-run-as-root "
                         "-np 2 ");
  ASSERT_EQ(ep2.size(), cpu.size());
  // Summation order only (gradients all-reduced over ranks, expert GEMMs over
  // both ranks' rows): the fp32 bound above.
  for (size_t s = 0; s < cpu.size(); ++s) EXPECT_NEAR(ep2[s], fp32[s], 1e-3 * fp32[s]) << "ep2 step " << s + 1;

  // moe-eval of the fp32 run's checkpoint on both backends.
  moe::test::write_val_shard(d / "val", 64 * 16 + 1);
  auto eval = [&](const std::string& backend) {
    const std::string out = (d / ("eval_" + backend + ".json")).string();
    const CommandResult r = run_command(kBin + "/moe-eval --checkpoint " +
                                        (d / "fp32" / "ckpt").string() + " --data " +
                                        (d / "val").string() + " --backend " + backend +
                                        " --output " + out);
    EXPECT_EQ(r.code, 0) << r.out;
    std::ifstream f(out);
    return nlohmann::json::parse(f);
  };
  const auto ec = eval("cpu"), eg = eval("cuda");
  // A forward pass of the same fp32 parameters over 1024 tokens: ~1e-6
  // relative from summation order. The top-K's scores are not bitwise
  // identical, so a near-tie may flip; one token's loss would have to move by
  // ~0.5 for the mean to move by 1e-4, far more than a near-tied expert swap.
  EXPECT_NEAR(eg["loss"].get<double>(), ec["loss"].get<double>(), 1e-4 * ec["loss"].get<double>());
  EXPECT_EQ(eg["tokens"], ec["tokens"]);  // an integer count
  fs::remove_all(d);
}

// The top-K kernel keeps pick k in lane k of a warp: a larger moe.top_k is a
// config error before any work, not an internal error at the first forward.
TEST(GpuCli, TopKAboveTheKernelLimitIsAConfigError) {
  SKIP_WITHOUT_GPU();
  const fs::path d = temp_dir("topk");
  const CommandResult r = run_command(
      kBin + "/moe-train --config " + moe::test::configs_dir() + "/tiny.yaml" +
      " --set train.backend=cuda --set moe.n_routed=64 --set moe.top_k=33 --set train.steps=1" +
      " --set log.out_dir=" + (d / "out").string());
  moe::test::expect_one_line_error(r, "moe.top_k");
  fs::remove_all(d);
}

TEST(GpuCli, BenchOnCudaTimesEveryPhase) {
  SKIP_WITHOUT_GPU();
  const fs::path d = temp_dir("bench");
  const std::string out = (d / "bench.json").string();
  const CommandResult r =
      run_command(kBin + "/moe-bench --config " + moe::test::configs_dir() + "/bench/tiny.yaml" +
                  " --backend cuda --set train.precision=bfloat16 --steps 3 --json " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(out);
  const auto j = nlohmann::json::parse(f);
  EXPECT_EQ(j["backend"].get<std::string>(), "cuda-bf16");
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["peak_bytes"].get<double>(), 0);
  // Taken while the model is alive, so it holds at least the backend's own
  // allocations (on this tiny model the CUDA context would dominate anyway).
  EXPECT_GE(j["device_used_bytes"].get<double>(), j["peak_bytes"].get<double>());
  EXPECT_EQ(j["skipped_steps"].get<int>(), 0);
  const double step = j["step_s_mean"].get<double>();
  double named = 0;
  for (auto& [name, ph] : j["phases"].items())
    if (name != "other") {
      EXPECT_GT(ph["s_per_step"].get<double>(), 0) << name;  // events recorded for every phase
      named += ph["s_per_step"].get<double>();
    }
  EXPECT_LE(named, step * 1.01);  // GPU time of the phases fits in the step's wall time
  fs::remove_all(d);
}

}  // namespace

#else

TEST(GpuCli, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
