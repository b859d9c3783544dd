// moe-train as a user runs it: bad input gives one line and exit code 2,
// a short run writes its metrics, and an earlier run's files are kept.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "support/command.h"
#include "config/config.h"
#ifdef MOE_WITH_CUDA
#include "backend/cuda/cuda_device.h"
#endif

namespace {

namespace fs = std::filesystem;

using moe::test::CommandResult;
using moe::test::expect_one_line_error;

CommandResult run(const std::string& args) {
  return moe::test::run_command(std::string(MOE_BINARY_DIR) + "/moe-train " + args);
}

const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("moe_cli_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Cli, UnknownConfigKey) {
  expect_one_line_error(run("--config " + kTiny + " --set model.hiden=3"), "model.hiden");
}

TEST(Cli, InconsistentConfig) {
  expect_one_line_error(run("--config " + kTiny + " --set moe.top_k=9"), "moe.top_k");
  // group-limited routing: 8 experts in 4 groups of 2, top-2
  expect_one_line_error(run("--config " + kTiny + " --set moe.n_group=3"), "moe.n_group");
  expect_one_line_error(run("--config " + kTiny + " --set moe.n_group=4 --set moe.topk_group=5"),
                        "moe.topk_group");
  expect_one_line_error(
      run("--config " + kTiny + " --set moe.n_group=4 --set moe.topk_group=1 --set moe.top_k=3"),
      "moe.top_k");
}

// The CUDA kernel scores at most 32 groups (one per lane): a larger
// moe.n_group on the CUDA backend is a config error before any device is
// looked for.
TEST(Cli, TooManyGroupsForCudaIsAOneLineError) {
#ifdef MOE_WITH_CUDA
  expect_one_line_error(run("--config " + kTiny +
                            " --set moe.n_routed=66 --set moe.n_group=33 --set train.backend=cuda"),
                        "moe.n_group");
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(Cli, CudaWithoutADeviceIsAOneLineError) {
#ifdef MOE_WITH_CUDA
  if (moe::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible (see test_gpu_cli)";
#endif
  expect_one_line_error(run("--config " + kTiny + " --set train.backend=cuda"), "train.backend");
  expect_one_line_error(
      run("--config " + kTiny + " --set train.backend=auto --set parallel.transport=nccl"),
      "parallel.transport");
}

TEST(Cli, PlanPrintsTheMemoryPlanAndAllocatesNothing) {
  const std::string one_b = std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml";
  // The 1B model's plan on a machine without a GPU, for 8 ranks with EP 8.
  const CommandResult r = run("--config " + one_b +
                              " --set parallel.ep_size=8 --set train.micro_batch=16 "
                              "--set train.global_batch=128 --plan --world-size 8");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("rank 0 of 8 (ep_size 8, zero 0), bfloat16 on cuda"), std::string::npos)
      << r.out;
  for (const char* row : {"weights", "gradients", "optimizer state", "bf16 weight copies",
                          "activations", "scratch", "workspace", "total", "FLOPs per token"})
    EXPECT_NE(r.out.find(row), std::string::npos) << row;
  // ZeRO-1 over the 8 ranks (ep_size 1): the optimizer line is the shards'.
  const CommandResult z = run("--config " + one_b +
                              " --set train.zero=1 --set train.micro_batch=16 "
                              "--set train.global_batch=128 --plan --world-size 8");
  EXPECT_EQ(z.code, 0) << z.out;
  EXPECT_NE(z.out.find("(ep_size 1, zero 1)"), std::string::npos) << z.out;
  EXPECT_NE(z.out.find("ZeRO-1 shards"), std::string::npos) << z.out;
  expect_one_line_error(run("--config " + kTiny + " --set train.zero=2 --plan"), "train.zero");
  expect_one_line_error(run("--config " + kTiny + " --set train.recompute=some --plan"),
                        "train.recompute");
  // A layout the config cannot run: one line, exit 2.
  expect_one_line_error(run("--config " + one_b +
                            " --set parallel.ep_size=8 --set train.global_batch=48 --plan --world-size 3"),
                        "parallel.ep_size");
  expect_one_line_error(run("--config " + kTiny + " --world-size 2"), "--world-size");
  expect_one_line_error(run("--config " + kTiny + " --plan --world-size 0"), "--world-size");
}

TEST(Cli, PrintConfigIsTheResolvedConfig) {
  const std::string preset = std::string(MOE_SOURCE_DIR) + "/configs/paper/1b_aux_loss.yaml";
  const CommandResult r = run("--config " + preset + " --set train.steps=5 --print-config");
  ASSERT_EQ(r.code, 0) << r.out;
  // Every key, the base and the override applied: it loads back to the same config.
  const moe::Config printed = moe::parse_config(r.out);
  EXPECT_EQ(printed, moe::load_config(preset, {"train.steps=5"}));
  EXPECT_EQ(printed.balance.method, moe::BalanceMethod::AuxLoss);  // the preset's own key
  EXPECT_EQ(printed.model.hidden, 1024);                            // from its base
  EXPECT_EQ(r.out.find("base:"), std::string::npos);
}

TEST(Cli, MissingConfigFile) {
  expect_one_line_error(run("--config /nonexistent/x.yaml"), "/nonexistent/x.yaml");
}

TEST(Cli, BadArguments) {
  expect_one_line_error(run("--config " + kTiny + " --bogus"), "--bogus");
  expect_one_line_error(run(""), "--config");
  expect_one_line_error(run("--config"), "--config");
}

TEST(Cli, MissingAndCorruptTokenFiles) {
  const fs::path d = temp_dir("data");
  expect_one_line_error(run("--config " + kTiny + " --set data.source=tokens --set data.path=" +
                            (d / "none.bin").string()),
                        (d / "none.bin").string());
  // 3 bytes cannot be uint16 tokens.
  std::ofstream(d / "odd.bin") << "abc";
  expect_one_line_error(run("--config " + kTiny + " --set data.source=tokens --set data.path=" +
                            (d / "odd.bin").string()),
                        "odd.bin");
  // Tokens outside the vocabulary.
  {
    std::ofstream f(d / "big.bin", std::ios::binary);
    for (int i = 0; i < 1000; ++i) {
      const uint16_t t = uint16_t(i % 600);  // vocab is 512
      f.write(reinterpret_cast<const char*>(&t), 2);
    }
  }
  expect_one_line_error(run("--config " + kTiny + " --set data.source=tokens --set data.path=" +
                            (d / "big.bin").string()),
                        "vocab_size");
  fs::remove_all(d);
}

// A preset run where its corpus is not there (the README's GPU command on a
// fresh clone) stops before any work with one line, exit 2: the missing path,
// which corpus the preset expects and the commands that make it.
TEST(Cli, APresetWithoutItsDataNamesTheCorpusAndHowToMakeIt) {
  const fs::path d = temp_dir("preset_data");
  const std::string in_d = "cd " + d.string() + " && " + MOE_BINARY_DIR + "/moe-train --config " +
                           MOE_SOURCE_DIR + "/configs/";
  const CommandResult one_b = moe::test::run_command(in_d + "paper/1b_aux_loss.yaml");
  expect_one_line_error(one_b, "data/web100b: no such shard file or directory");
  for (const char* part :
       {"this config expects ~100B tokens", "build/moe-data tokenizer-train --input corpus/",
        "build/moe-data prepare --tokenizer data/web32k/tokenizer.model --input corpus/ "
        "--output data/web100b",
        "(docs/reproduction.md, Paper scale)"})
    EXPECT_NE(one_b.out.find(part), std::string::npos) << part << " not in: " << one_b.out;
  const CommandResult three_b = moe::test::run_command(in_d + "paper/3b_loss_free.yaml");
  expect_one_line_error(three_b, "--output data/web200b");
  expect_one_line_error(moe::test::run_command(in_d + "demo.yaml"), "scripts/demo_corpus.sh");
  // Refused before anything was built or written.
  EXPECT_FALSE(fs::exists(d / "runs")) << "a run directory was made";
  // A missing validation path is refused the same way, before any work.
  const CommandResult val = run("--config " + kTiny + " --set data.val_path=" +
                                (d / "none").string() + " --set log.out_dir=" +
                                (d / "runs").string());
  expect_one_line_error(val, (d / "none").string());
  EXPECT_FALSE(fs::exists(d / "runs")) << "a run directory was made";
  fs::remove_all(d);
}

// A token file truncated while moe-train has it mapped: the run ends at its
// next read with one line naming the file and exit code 2 (no SIGBUS).
TEST(Cli, ATokenFileTruncatedUnderARunningJobEndsItWithOneLine) {
  const fs::path d = temp_dir("truncated");
  {
    std::ofstream f(d / "tokens.bin", std::ios::binary);
    for (int i = 0; i < 200000; ++i) {
      const uint16_t t = uint16_t((i * 7 + 3) % 512);
      f.write(reinterpret_cast<const char*>(&t), 2);
    }
  }
  const std::string log = (d / "train.log").string();
  const std::string cmd =
      std::string(MOE_BINARY_DIR) + "/moe-train --config " + kTiny +
      " --set train.steps=100000 --set train.threads=1 --set log.interval=1" +
      " --set data.source=tokens --set data.path=" + (d / "tokens.bin").string() +
      " --set log.out_dir=" + (d / "run").string();
  // Started in the background; once step 2 is logged the file loses half its tokens.
  const CommandResult r = moe::test::run_command(
      "bash -c '" + cmd + " > " + log + " 2>&1 & pid=$!; "
      "for i in $(seq 600); do grep -q \"step  *2/\" " + log + " && break; sleep 0.1; done; "
      "truncate -s 200000 " + (d / "tokens.bin").string() + "; wait $pid; echo exit=$?'");
  EXPECT_NE(r.out.find("exit=2"), std::string::npos) << r.out;
  std::ifstream f(log);
  const std::string out((std::istreambuf_iterator<char>(f)), {});
  const std::string want = "moe-train: error: " + (d / "tokens.bin").string() +
                           ": token file changed on disk while this run reads it";
  EXPECT_NE(out.find(want), std::string::npos) << out;
  EXPECT_EQ(out.find("Bus error"), std::string::npos) << out;
  fs::remove_all(d);
}

TEST(Cli, ShortRunWritesMetricsAndKeepsEarlierRuns) {
  const fs::path d = temp_dir("run");
  const std::string args = "--config " + kTiny + " --set train.steps=4 --set log.interval=2" +
                           " --set log.expert_load_interval=2 --set log.out_dir=" + d.string();
  const CommandResult r = run(args);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step 4/4"), std::string::npos) << r.out;
  std::ifstream f(d / "metrics.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["step"].get<int>(), ++n);
    for (const char* key : {"loss", "lr", "grad_norm", "aux_loss", "maxvio_batch", "tokens_per_s"})
      EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["maxvio_batch_layers"].size(), 2u);
    EXPECT_EQ(j["maxvio_compute_layers"].size(), 2u);
    EXPECT_GE(j["maxvio_compute"].get<double>(), 0.0);
    EXPECT_TRUE(j["mfu"].is_null());  // no GPU peak on the CPU
  }
  EXPECT_EQ(n, 4);
  std::ifstream loads(d / "expert_loads.jsonl");
  int m = 0;
  while (std::getline(loads, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["loads"].size(), 2u);  // MoE layers
    EXPECT_EQ(j["loads"][0].size(), 8u);  // experts
    int64_t total = 0;
    for (auto& c : j["loads"][0]) total += c.get<int64_t>();
    EXPECT_EQ(total, 16 * 64 * 2);  // global batch tokens x top_k
    // Loss-Free, sign rule, u = 0.001: after s steps each bias is a multiple
    // of u no larger than s*u, and the imbalance has moved some of them.
    const int64_t step = j["step"].get<int64_t>();
    ASSERT_EQ(j["bias"].size(), 2u);
    bool moved = false;
    for (auto& b : j["bias"][0]) {
      const double v = b.get<double>();
      EXPECT_LE(std::abs(v), double(step) * 0.001 + 1e-9);
      EXPECT_NEAR(v / 0.001, std::round(v / 0.001), 1e-3);
      moved = moved || v != 0.0;
    }
    EXPECT_TRUE(moved);
    ++m;
  }
  EXPECT_EQ(m, 2);  // steps 2 and 4
  EXPECT_TRUE(fs::exists(d / "config.yaml"));
  // checkpoint.dir unset: checkpoints go under the run's out_dir.
  EXPECT_TRUE(fs::exists(d / "checkpoints" / "step_00000004")) << r.out;

  // A second run into the same directory keeps the first run's metrics aside.
  ASSERT_EQ(run(args).code, 0);
  EXPECT_TRUE(fs::exists(d / "metrics.1.jsonl"));
  EXPECT_TRUE(fs::exists(d / "metrics.jsonl"));
  fs::remove_all(d);
}

}  // namespace
