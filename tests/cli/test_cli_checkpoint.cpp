// moe-train and moe-eval as a scheduler and a user drive them: SIGTERM leaves
// a resumable checkpoint, a crash in the middle of a save leaves the previous
// one loadable, resume refuses another model, moe-eval writes its JSON.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "support/val_shard.h"
#include "train/checkpoint.h"

namespace {

namespace fs = std::filesystem;
const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("moe_clickpt_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Starts a program with arguments (and optional extra environment), output
// to `log`; returns its pid.
pid_t spawn(const std::string& program, const std::vector<std::string>& args, const fs::path& log,
            const std::string& env = "") {
  const pid_t pid = fork();
  if (pid == 0) {
    FILE* f = fopen(log.c_str(), "w");
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    if (!env.empty()) putenv(const_cast<char*>(env.c_str()));
    std::vector<char*> argv{const_cast<char*>(program.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run(const std::string& program, const std::vector<std::string>& args, const fs::path& log,
        const std::string& env = "") {
  return wait_exit(spawn(program, args, log, env));
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

int count_lines(const fs::path& p) {
  std::ifstream f(p);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) ++n;
  return n;
}

const std::string kTrain = std::string(MOE_BINARY_DIR) + "/moe-train";
const std::string kEval = std::string(MOE_BINARY_DIR) + "/moe-eval";

std::vector<std::string> train_args(const fs::path& d, int64_t steps, int64_t interval) {
  return {"--config", kTiny, "--set", "train.steps=" + std::to_string(steps), "--set",
          "checkpoint.dir=" + (d / "ckpt").string(), "--set",
          "checkpoint.interval=" + std::to_string(interval), "--set",
          "log.out_dir=" + (d / "run").string(), "--set", "log.interval=1", "--set",
          "train.threads=1"};
}

TEST(CliCheckpoint, SigtermLeavesAResumableCheckpoint) {
  const fs::path d = temp_dir("term");
  const pid_t pid = spawn(kTrain, train_args(d, 100000, 0), d / "log1");
  // Wait for a few steps, then ask it to stop as a scheduler would.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (count_lines(d / "run" / "metrics.jsonl") < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(pid, SIGTERM);
  ASSERT_EQ(wait_exit(pid), 0) << slurp(d / "log1");
  const std::string log1 = slurp(d / "log1");
  EXPECT_NE(log1.find("stop signal"), std::string::npos);
  const std::string latest = moe::find_latest_checkpoint((d / "ckpt").string());
  ASSERT_NE(latest, "") << log1;
  const int64_t step = moe::read_trainer_state(latest).step;
  EXPECT_GE(step, 3);
  // The signal was acknowledged at once, naming it and the step in work:
  // at least 3 (3 steps were logged), at most the one the checkpoint holds.
  std::smatch ack;
  ASSERT_TRUE(std::regex_search(
      log1, ack,
      std::regex("\nmoe-train: stop requested \\(SIGTERM\\): finishing step (\\d+), then "
                 "checkpoint; send again to exit without one\n")))
      << log1;
  EXPECT_GE(std::stoll(ack[1]), 3);
  EXPECT_LE(std::stoll(ack[1]), step);
  EXPECT_LT(log1.find(ack[0]), log1.find("stop signal"));  // before the stop itself
  EXPECT_EQ(count_lines(d / "run" / "metrics.jsonl"), step);

  // Resume and finish two more steps; metrics continue in the same file.
  auto args = train_args(d, step + 2, 0);
  args.insert(args.end(), {"--resume", "auto"});
  ASSERT_EQ(run(kTrain, args, d / "log2"), 0) << slurp(d / "log2");
  EXPECT_NE(slurp(d / "log2").find("resumed from"), std::string::npos);
  EXPECT_EQ(moe::read_trainer_state(moe::find_latest_checkpoint((d / "ckpt").string())).step,
            step + 2);
  EXPECT_EQ(count_lines(d / "run" / "metrics.jsonl"), step + 2);
  fs::remove_all(d);
}

TEST(CliCheckpoint, StopWithoutCheckpointDirSaysNothingIsSaved) {
  const fs::path d = temp_dir("termnock");
  auto args = train_args(d, 100000, 0);
  args.insert(args.end(), {"--set", "checkpoint.dir=''"});
  const pid_t pid = spawn(kTrain, args, d / "log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (count_lines(d / "run" / "metrics.jsonl") < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(pid, SIGINT);
  ASSERT_EQ(wait_exit(pid), 0) << slurp(d / "log");
  EXPECT_TRUE(std::regex_search(
      slurp(d / "log"),
      std::regex("\nmoe-train: stop requested \\(SIGINT\\): finishing step \\d+, then exit "
                 "\\(no checkpoint.dir: nothing saved\\)\n")))
      << slurp(d / "log");
  fs::remove_all(d);
}

TEST(CliCheckpoint, CrashDuringSaveKeepsThePreviousCheckpoint) {
  const fs::path d = temp_dir("crash");
  ASSERT_EQ(run(kTrain, train_args(d, 2, 2), d / "log1"), 0) << slurp(d / "log1");
  auto args = train_args(d, 4, 2);
  args.insert(args.end(), {"--resume", "auto"});
  // The process dies between writing step 4 and renaming it into place.
  EXPECT_EQ(run(kTrain, args, d / "log2", "MOE_FAULT_INJECTION=checkpoint.before_rename"), 3);
  EXPECT_TRUE(fs::exists(d / "ckpt" / ".step_00000004.tmp"));
  const std::string latest = moe::find_latest_checkpoint((d / "ckpt").string());
  EXPECT_EQ(fs::path(latest).filename(), "step_00000002");
  ASSERT_EQ(run(kTrain, args, d / "log3"), 0) << slurp(d / "log3");
  EXPECT_EQ(fs::path(moe::find_latest_checkpoint((d / "ckpt").string())).filename(),
            "step_00000004");
  fs::remove_all(d);
}

TEST(CliCheckpoint, ResumeRefusesAnotherModelAndBadCheckpoints) {
  const fs::path d = temp_dir("refuse");
  ASSERT_EQ(run(kTrain, train_args(d, 2, 0), d / "log1"), 0) << slurp(d / "log1");
  auto args = train_args(d, 4, 0);
  args.insert(args.end(), {"--resume", "auto", "--set", "model.hidden=32"});
  EXPECT_EQ(run(kTrain, args, d / "log2"), 2);
  EXPECT_NE(slurp(d / "log2").find("model.hidden"), std::string::npos) << slurp(d / "log2");

  auto bad = train_args(d, 4, 0);
  bad.insert(bad.end(), {"--resume", (d / "nowhere").string()});
  EXPECT_EQ(run(kTrain, bad, d / "log3"), 2);
  EXPECT_NE(slurp(d / "log3").find("nowhere"), std::string::npos);

  const std::string latest = moe::find_latest_checkpoint((d / "ckpt").string());
  fs::resize_file(latest + "/optimizer.safetensors", 100);
  auto trunc = train_args(d, 4, 0);
  trunc.insert(trunc.end(), {"--resume", "auto"});
  EXPECT_EQ(run(kTrain, trunc, d / "log4"), 2);
  EXPECT_NE(slurp(d / "log4").find("optimizer.safetensors"), std::string::npos)
      << slurp(d / "log4");
  fs::remove_all(d);
}

// --resume DIR takes a checkpoint or, as moe-eval and moe-export read
// --checkpoint, a checkpoint.dir: its newest checkpoint.
TEST(CliCheckpoint, ResumeFromACheckpointDirTakesItsNewest) {
  const fs::path d = temp_dir("resumedir");
  ASSERT_EQ(run(kTrain, train_args(d, 4, 2), d / "log1"), 0) << slurp(d / "log1");
  auto args = train_args(d, 6, 2);
  args.insert(args.end(), {"--resume", (d / "ckpt").string()});
  ASSERT_EQ(run(kTrain, args, d / "log2"), 0) << slurp(d / "log2");
  EXPECT_NE(slurp(d / "log2").find("resumed from " + (d / "ckpt" / "step_00000004").string() +
                                   " at step 4"),
            std::string::npos)
      << slurp(d / "log2");
  EXPECT_EQ(count_lines(d / "run" / "metrics.jsonl"), 6);  // appended: no fresh start
  EXPECT_EQ(moe::read_trainer_state(moe::find_latest_checkpoint((d / "ckpt").string())).step, 6);

  // A directory that is neither: one line naming it, exit 2.
  auto neither = train_args(d, 6, 2);
  neither.insert(neither.end(), {"--resume", (d / "run").string()});
  EXPECT_EQ(run(kTrain, neither, d / "log3"), 2);
  EXPECT_EQ(slurp(d / "log3"), "moe-train: error: --resume " + (d / "run").string() +
                                   ": neither a checkpoint (trainer_state.json) nor a "
                                   "checkpoint.dir (step_* checkpoints)\n");
  fs::remove_all(d);
}

TEST(CliCheckpoint, MoeEvalWritesPerplexityAndMaxVio) {
  const fs::path d = temp_dir("eval");
  // Validation shards: 20 sequences' worth of tokens of the tiny vocab.
  moe::test::write_val_shard(d / "val", 64 * 20 + 1);

  auto args = train_args(d, 4, 0);
  args.insert(args.end(), {"--set", "data.val_path=" + (d / "val").string(), "--set",
                           "train.eval_interval=2"});
  ASSERT_EQ(run(kTrain, args, d / "log1"), 0) << slurp(d / "log1");
  EXPECT_EQ(count_lines(d / "run" / "eval.jsonl"), 2);

  const std::string out = (d / "eval.json").string();
  // moe-eval on the CPU with one thread, as train_args trains (train.threads=1,
  // train.backend cpu): OpenBLAS's sgemm rounds differently with another thread
  // count on some kernels (Haswell, Zen), so "all cores" would not reproduce
  // the training process's evals bit for bit. The batch is the default, the
  // checkpoint's train.micro_batch, which the in-training and final evals use.
  ASSERT_EQ(run(kEval, {"--checkpoint", (d / "ckpt").string(), "--data", (d / "val").string(),
                        "--output", out, "--threads", "1", "--backend", "cpu"},
                d / "log2"),
            0)
      << slurp(d / "log2");
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_EQ(j["tokens"].get<int64_t>(), 64 * 20);
  EXPECT_EQ(j["step"].get<int64_t>(), 4);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(j["loss"].get<double>()), 1e-9);
  EXPECT_EQ(j["maxvio_global_layers"].size(), 2u);
  EXPECT_EQ(j["expert_loads"].size(), 2u);
  int64_t total = 0;
  for (auto& c : j["expert_loads"][0]) total += c.get<int64_t>();
  EXPECT_EQ(total, 64 * 20 * 2);  // tokens x top_k
  // The eval at step 4 in training saw the first 1M tokens = the whole split
  // too. Exact: the training process's model at step 4 holds the weights and
  // bias the checkpoint stores (fp32, raw bytes) and evaluates the same 20
  // sequences in the same batches of train.micro_batch (the same GEMM shapes)
  // with the same kernel and thread count (1) as moe-eval above, so every sum
  // runs in the same order; JSON round-trips doubles.
  std::ifstream evals(d / "run" / "eval.jsonl");
  std::string line, last;
  while (std::getline(evals, line)) last = line;
  EXPECT_EQ(nlohmann::json::parse(last)["loss"].get<double>(), j["loss"].get<double>());
  // The end of training evaluated the whole split into the run's eval.json,
  // as moe-eval evaluates the final checkpoint: the same weights, batch, data
  // and thread count (1), so the same bits, as above.
  const auto fin = nlohmann::json::parse(slurp(d / "run" / "eval.json"));
  EXPECT_EQ(fin["step"].get<int64_t>(), 4);
  EXPECT_EQ(fin["tokens"], j["tokens"]);
  EXPECT_EQ(fin["expert_loads"], j["expert_loads"]);
  EXPECT_EQ(fin["loss"].get<double>(), j["loss"].get<double>());
  EXPECT_EQ(fin["maxvio_global"].get<double>(), j["maxvio_global"].get<double>());
  EXPECT_EQ(fin["checkpoint"], j["checkpoint"]);
  EXPECT_EQ(fin["data"], j["data"]);

  // A fresh run into the same directories keeps the earlier run's checkpoints
  // aside (keep_last would prune them, --resume auto would take them), and
  // its eval.json beside the new one, which reflects the new run.
  auto again = train_args(d, 2, 0);
  // (An in-training eval of the last step over the whole split stands in
  // for the final one: eval.json's loss is that very EvalResult, so the two
  // are equal exactly, below.)
  again.insert(again.end(), {"--set", "data.val_path=" + (d / "val").string(), "--set",
                             "train.eval_interval=2", "--set", "train.eval_max_tokens=0"});
  ASSERT_EQ(run(kTrain, again, d / "log5"), 0) << slurp(d / "log5");
  EXPECT_EQ(moe::read_trainer_state(moe::find_latest_checkpoint((d / "ckpt.1").string())).step, 4);
  EXPECT_EQ(moe::read_trainer_state(moe::find_latest_checkpoint((d / "ckpt").string())).step, 2);
  EXPECT_EQ(nlohmann::json::parse(slurp(d / "run" / "eval.1.json"))["step"].get<int64_t>(), 4);
  const auto fin2 = nlohmann::json::parse(slurp(d / "run" / "eval.json"));
  EXPECT_EQ(fin2["step"].get<int64_t>(), 2);
  std::ifstream evals2(d / "run" / "eval.jsonl");
  while (std::getline(evals2, line)) last = line;
  EXPECT_EQ(nlohmann::json::parse(last)["step"].get<int64_t>(), 2);
  EXPECT_EQ(nlohmann::json::parse(last)["loss"], fin2["loss"]);  // one EvalResult, written twice
  EXPECT_EQ(fin2["tokens"], j["tokens"]);

  EXPECT_EQ(run(kEval, {"--checkpoint", (d / "none").string()}, d / "log3"), 2);
  EXPECT_EQ(run(kEval, {"--checkpoint", (d / "ckpt").string(), "--max-tokens", "x"}, d / "log4"), 2);
  fs::remove_all(d);
}

}  // namespace
