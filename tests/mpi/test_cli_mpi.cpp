// `mpirun -np 2 moe-train` as users launch it: the same losses as one rank,
// a failing rank ends the whole job within seconds, inconsistent sizes are
// one clear line.
#include <gtest/gtest.h>

#include "support/command.h"
#include "core/dir_lock.h"
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace {

namespace fs = std::filesystem;

using moe::test::CommandResult;

CommandResult run(const std::string& cmd) { return moe::test::run_command(cmd); }

const std::string kTrain = std::string(MOE_BINARY_DIR) + "/moe-train --config " +
                           std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";
const std::string kMpirun =
    "OMP_NUM_THREADS=1 timeout 120 mpirun --oversubscribe --allow-run-as-root -np 2 ";

std::vector<double> losses(const fs::path& metrics) {
  std::ifstream f(metrics);
  std::string line;
  std::vector<double> out;
  while (std::getline(f, line)) out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  return out;
}

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("moe_climpi_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(CliMpi, TwoRanksExpertParallelMatchOneRank) {
  const fs::path d = temp_dir("eq");
  const std::string common = " --set train.steps=5 --set train.threads=1";
  const CommandResult one = run(kTrain + common + " --set log.out_dir=" + (d / "one").string());
  ASSERT_EQ(one.code, 0) << one.out;
  const CommandResult two = run(kMpirun + kTrain + common + " --set parallel.ep_size=2" +
                         " --set log.out_dir=" + (d / "two").string());
  ASSERT_EQ(two.code, 0) << two.out;
  EXPECT_NE(two.out.find("EP group 0"), std::string::npos) << two.out;  // rank 0's layout
  const auto a = losses(d / "one" / "metrics.jsonl"), b = losses(d / "two" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  // Not bit-exact: both sides run one thread (train.threads=1, and mpirun's
  // OMP_NUM_THREADS=1) on the same kernel, but one rank runs the 16 sequences
  // as 2 micro-batches accumulating gradients in place, two ranks one each
  // and all-reduce, and EP 2's expert GEMMs take both ranks' rows at once
  // (another M): the same sums in another order. The tolerance, worst case:
  // a gradient element is a float32 sum over <= 1024 tokens, relative error
  // delta <= 1024 * 2^-24 = 6e-5 (sqrt(1024) * 2^-24 = 2e-6 typically);
  // AdamW's normalised update moves by <= lr * delta, and lr over steps 1-4
  // sums to (1+2+3+4) * 1.5e-4 = 1.5e-3 (warm-up; gnorm 0.45 < grad_clip 1,
  // no clipping); so step 5's loss moves by <= |g|_1 * 1.5e-3 * delta <=
  // sqrt(P) |g|_2 * 1.5e-3 * delta = sqrt(2.6e5) * 0.45 * 1.5e-3 * 6e-5 =
  // 2.1e-5 absolute, 3.4e-6 relative to the loss 6.2 (the double loss sums
  // add ~1e-16). A top-K flip from a near-tie score moves a token to another
  // expert, whose output at init_std 0.006 is O(1e-5) per component: its
  // loss moves by ~1e-5, the mean over 1024 tokens by ~1e-8; even a count off
  // by one that turns a Loss-Free bias (u = 1e-3) and reroutes every token of
  // a layer adds <= ~1e-5 absolute, 1.6e-6 relative. 1e-5 relative is twice
  // the two bounds' sum; measured here: <= 4e-10 under OPENBLAS_CORETYPE
  // Haswell, Zen and SkylakeX.
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * a[i]) << "step " << i + 1;
  fs::remove_all(d);
}

std::vector<nlohmann::json> records(const fs::path& metrics) {
  std::ifstream f(metrics);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// metrics.jsonl reports the communication fan-out with expert parallelism
// only; a token's top-2 experts lie on 1 or 2 of the 2 ranks; groups aligned
// with the ranks (moe.n_group = ep_size, topk_group 1) keep every token on
// one. One machine: no node fields. (The exact values against a reference:
// test_mpi_fanout.)
TEST(CliMpi, ExpertParallelReportsFanOut) {
  const fs::path d = temp_dir("fanout");
  const std::string common = " --set train.steps=3 --set train.threads=1";
  const CommandResult one = run(kTrain + common + " --set log.out_dir=" + (d / "one").string());
  ASSERT_EQ(one.code, 0) << one.out;
  for (const auto& j : records(d / "one" / "metrics.jsonl"))
    for (const char* key : {"fanout_ranks_mean", "fanout_ranks_max", "fanout_nodes_mean"})
      EXPECT_FALSE(j.contains(key)) << key;

  const std::string ep = kMpirun + kTrain + common + " --set parallel.ep_size=2";
  const CommandResult two = run(ep + " --set log.out_dir=" + (d / "two").string());
  ASSERT_EQ(two.code, 0) << two.out;
  const auto free = records(d / "two" / "metrics.jsonl");
  ASSERT_EQ(free.size(), 3u);
  bool some_token_on_both = false;
  for (const auto& j : free) {
    ASSERT_TRUE(j.contains("fanout_ranks_mean") && j.contains("fanout_ranks_max")) << j.dump();
    EXPECT_FALSE(j.contains("fanout_nodes_mean")) << j.dump();
    const double mean = j["fanout_ranks_mean"].get<double>();
    const int max = j["fanout_ranks_max"].get<int>();
    EXPECT_GE(mean, 1.0);
    EXPECT_LE(mean, max);
    EXPECT_LE(max, 2);  // min(top_k, ep_size)
    some_token_on_both |= max == 2;
  }
  EXPECT_TRUE(some_token_on_both);  // unlimited routing does spread tokens

  const CommandResult grouped = run(ep + " --set moe.n_group=2 --set moe.topk_group=1" +
                                    " --set log.out_dir=" + (d / "grouped").string());
  ASSERT_EQ(grouped.code, 0) << grouped.out;
  const auto limited = records(d / "grouped" / "metrics.jsonl");
  ASSERT_EQ(limited.size(), 3u);
  for (const auto& j : limited) {
    EXPECT_EQ(j["fanout_ranks_max"].get<int>(), 1) << j.dump();
    EXPECT_EQ(j["fanout_ranks_mean"].get<double>(), 1.0) << j.dump();
  }
  fs::remove_all(d);
}

TEST(CliMpi, AFailingRankEndsTheJobWithinSeconds) {
  const fs::path d = temp_dir("fail");
  const CommandResult r = run("MOE_FAULT_INJECTION=train.fail_rank=1 " + kMpirun + kTrain +
                       " --set train.steps=1000 --set log.out_dir=" + d.string());
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.code, 124) << "the job hung until the timeout";
  EXPECT_LT(r.seconds, 60);
  EXPECT_NE(r.out.find("rank 1: internal error: injected failure"), std::string::npos) << r.out;
  fs::remove_all(d);
}

// A stop is acknowledged at once on every rank's console (mpirun forwards
// SIGUSR1 to its ranks), and the job still stops with a checkpoint, exit 0.
TEST(CliMpi, EveryRankAcknowledgesAStop) {
  const fs::path d = temp_dir("stop");
  // mpirun itself gets the signal (no `timeout` between: it would not pass USR1 on).
  const std::string cmd = "OMP_NUM_THREADS=1 exec mpirun --oversubscribe --allow-run-as-root -np 2 " +
                          kTrain +
                          " --set train.steps=100000 --set train.threads=1 --set log.interval=1"
                          " --set log.out_dir=" + (d / "run").string() + " > " +
                          (d / "log").string() + " 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (losses(d / "run" / "metrics.jsonl").size() < 2 && std::chrono::steady_clock::now() < deadline)
    usleep(50000);
  kill(pid, SIGUSR1);
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {  // the job did not stop: end it, and fail
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    usleep(50000);
  }
  std::ifstream f(d / "log");
  const std::string out((std::istreambuf_iterator<char>(f)), {});
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  for (const char* rank : {"rank 0", "rank 1"})
    EXPECT_NE(out.find(std::string("moe-train: ") + rank +
                       ": stop requested (SIGUSR1): finishing step "),
              std::string::npos)
        << rank << ":\n" << out;
  EXPECT_NE(out.find("stop signal"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(d / "run" / "checkpoints" / "latest")) << out;
  fs::remove_all(d);
}

// Only rank 0 locks the run directory; its refusal reaches the whole job:
// exit 2 with the line, no hang, nothing written.
TEST(CliMpi, AHeldRunDirectoryEndsTheJob) {
  const fs::path d = temp_dir("held");
  const moe::DirLock held((d / "run").string(), "log.out_dir", "moe-train");
  const CommandResult r = run(kMpirun + kTrain + " --set train.threads=1 --set log.out_dir=" +
                              (d / "run").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("moe-train: rank 0: error: " + (d / "run").string() +
                       " is in use by another moe-train (host "),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(d / "run" / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(d / "run" / "checkpoints"));
  fs::remove_all(d);
}

TEST(CliMpi, InconsistentSizesAreOneLine) {
  const CommandResult r = run(kMpirun + kTrain + " --set parallel.ep_size=3");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("parallel.ep_size"), std::string::npos) << r.out;
}

}  // namespace
