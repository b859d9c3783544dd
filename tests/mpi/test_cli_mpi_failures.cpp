// Multi-rank failures as they happen on a cluster, with `mpirun -np 2
// moe-train` (expert parallelism 2, a checkpoint every 2 steps), each
// measured and then resumed (docs/reliability.md):
//   - a rank killed with SIGKILL mid-run: the job ends within seconds and
//     mpirun names the rank;
//   - a rank stalled (SIGSTOP): the watchdog of the other rank ends the job;
//   - a checkpoint interrupted between writing and renaming: no half-written
//     checkpoint becomes `latest`;
//   - after each, `--resume auto` continues bit-exactly from the last
//     complete checkpoint: the same losses and, at the end, the same bytes
//     of the final checkpoint as a run that was never interrupted.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "support/command.h"

namespace {

namespace fs = std::filesystem;

using moe::test::CommandResult;

constexpr int kSteps = 40;

std::string train_args(const fs::path& d, const std::string& log_dir) {
  return std::string(MOE_BINARY_DIR) + "/moe-train --config " + MOE_SOURCE_DIR +
         "/configs/tiny.yaml --set train.steps=" + std::to_string(kSteps) +
         " --set train.threads=1 --set log.interval=1 --set parallel.ep_size=2"
         " --set checkpoint.interval=2 --set checkpoint.keep_last=3 --set train.final_eval=false"
         " --set checkpoint.dir=" + (d / "ck").string() + " --set log.out_dir=" +
         (d / log_dir).string();
}

const std::string kMpirun =
    "OMP_NUM_THREADS=1 timeout 300 mpirun --oversubscribe --allow-run-as-root -np 2 ";

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("moe_mpifail_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// step -> loss of a metrics.jsonl.
std::map<int64_t, double> losses(const fs::path& metrics) {
  std::ifstream f(metrics);
  std::map<int64_t, double> out;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    out[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return out;
}

// The uninterrupted run every test compares with, run once.
const fs::path& reference() {
  static const fs::path d = [] {
    const fs::path dir = temp_dir("reference");
    const CommandResult r = moe::test::run_command(kMpirun + train_args(dir, "run"));
    EXPECT_EQ(r.code, 0) << r.out;
    return dir;
  }();
  return d;
}

struct Disturbed {
  std::string log;     // what the job printed
  int exit_code = -1;  // of mpirun
  double seconds = 0;  // from the disturbance to the end of the job
};

// Starts the job, waits until it has logged step `after`, runs `action` (a
// shell command; $PID1 is world rank 1's process), and times the job's end.
Disturbed run_and_disturb(const fs::path& d, const std::string& env, const std::string& extra,
                          int after, const std::string& action) {
  const std::string log = (d / "job.log").string();
  const std::string script =
      env + " " + kMpirun + train_args(d, "run") + extra + " > " + log + " 2>&1 & job=$!\n" +
      "for i in $(seq 1200); do grep -q 'step  *" + std::to_string(after) + "/' " + log +
      " && break; sleep 0.05; done\n"
      "PID1=\n"
      "for p in $(pgrep -f 'moe-train.*" + d.string() + "/'); do\n"
      "  tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && PID1=$p\n"
      "done\n"
      "t0=$(date +%s.%N)\n" + action + "\n"
      "wait $job; code=$?\n"
      "t1=$(date +%s.%N)\n"
      "[ -n \"$PID1\" ] && kill -KILL $PID1 2>/dev/null\n"
      "echo \"exit=$code seconds=$(awk \"BEGIN{print $t1 - $t0}\")\"\n";
  std::ofstream(d / "disturb.sh") << script;
  const CommandResult r = moe::test::run_command("bash " + (d / "disturb.sh").string());
  Disturbed out;
  out.log = read_file(log);
  const size_t at = r.out.rfind("exit=");
  if (at != std::string::npos)
    std::sscanf(r.out.c_str() + at, "exit=%d seconds=%lf", &out.exit_code, &out.seconds);
  return out;
}

// `--resume auto` on the same checkpoint.dir: the steps after the last
// complete checkpoint `from` come out as in the reference, and so does the
// final checkpoint, byte for byte. Exact by construction: the reference, the
// disturbed run (whose steps up to `from` are the reference's) and the
// resumed run are the same command (train_args: 2 ranks, EP 2, one thread
// per rank by train.threads=1 and OMP_NUM_THREADS=1) on the same machine, so
// the same kernel, GEMM shapes, thread count and reduction order (a sum of
// two ranks' partials is one commutative addition); the checkpoint holds the
// fp32 weights, AdamW moments and bias as raw bytes and the step, and each
// step's batch is a function of the step.
void expect_bit_exact_resume(const fs::path& d, int64_t from) {
  const CommandResult r =
      moe::test::run_command(kMpirun + train_args(d, "resumed") + " --resume auto");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resum"), std::string::npos) << r.out;
  const auto ref = losses(reference() / "run" / "metrics.jsonl");
  const auto got = losses(d / "resumed" / "metrics.jsonl");
  ASSERT_EQ(got.size(), size_t(kSteps - from)) << "the resumed run did not start after step " << from;
  EXPECT_EQ(got.begin()->first, from + 1);
  for (const auto& [step, loss] : got) EXPECT_EQ(loss, ref.at(step)) << "step " << step;
  const std::string last = "step_000000" + std::to_string(kSteps);
  for (const char* f : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_TRUE(read_file(d / "ck" / last / f) == read_file(reference() / "ck" / last / f))
        << f << " of the final checkpoint differs from the uninterrupted run's";
}

// The newest complete checkpoint named by `latest`, and no other name.
int64_t latest_step(const fs::path& ck) {
  const std::string name = read_file(ck / "latest");
  EXPECT_TRUE(fs::exists(ck / name.substr(0, name.find('\n')) / "trainer_state.json")) << name;
  return std::stoll(name.substr(5));
}

TEST(MpiFailures, ARankKilledMidRunEndsTheJobNamingItAndTheRunResumes) {
  ASSERT_FALSE(reference().empty());
  const fs::path d = temp_dir("sigkill");
  const Disturbed j = run_and_disturb(d, "", "", 5, "kill -KILL $PID1");
  EXPECT_NE(j.exit_code, 0) << j.log;
  EXPECT_NE(j.exit_code, 124) << "the job hung until the timeout\n" << j.log;
  EXPECT_LT(j.seconds, 30.0) << j.log;
  EXPECT_NE(j.log.find("process rank 1"), std::string::npos) << j.log;
  EXPECT_NE(j.log.find("signal 9"), std::string::npos) << j.log;
  std::printf("SIGKILL of rank 1: the job ended %.2f s later\n", j.seconds);
  const int64_t from = latest_step(d / "ck");
  EXPECT_GE(from, 4);
  expect_bit_exact_resume(d, from);
  fs::remove_all(d);
}

TEST(MpiFailures, AStalledRankIsEndedByTheWatchdogAndTheRunResumes) {
  ASSERT_FALSE(reference().empty());
  const fs::path d = temp_dir("stall");
  const Disturbed j =
      run_and_disturb(d, "", " --set parallel.timeout_seconds=3", 5, "kill -STOP $PID1");
  EXPECT_NE(j.exit_code, 0) << j.log;
  EXPECT_NE(j.exit_code, 124) << "the job hung until the timeout\n" << j.log;
  // Not before the timeout, counted from the last step that completed (a
  // moment before the stop).
  EXPECT_GE(j.seconds, 2.0) << j.log;
  EXPECT_LT(j.seconds, 30.0) << j.log;
  EXPECT_NE(j.log.find("moe-train: rank 0: no training step completed for 3 s"), std::string::npos)
      << j.log;
  std::printf("rank 1 stopped: the watchdog (3 s) ended the job %.2f s later\n", j.seconds);
  const int64_t from = latest_step(d / "ck");
  EXPECT_GE(from, 4);
  expect_bit_exact_resume(d, from);
  fs::remove_all(d);
}

TEST(MpiFailures, ACheckpointInterruptedBeforeItsRenameNeverBecomesLatest) {
  ASSERT_FALSE(reference().empty());
  const fs::path d = temp_dir("interrupted");
  // Rank 0, the writer, dies with the checkpoint of step 6 written but not renamed.
  const Disturbed j = run_and_disturb(d, "MOE_FAULT_INJECTION=checkpoint.before_rename=6", "",
                                      1, "true");
  EXPECT_NE(j.exit_code, 0) << j.log;
  EXPECT_NE(j.exit_code, 124) << j.log;
  EXPECT_TRUE(fs::exists(d / "ck" / ".step_00000006.tmp"));  // the half-written one
  EXPECT_FALSE(fs::exists(d / "ck" / "step_00000006"));
  EXPECT_EQ(latest_step(d / "ck"), 4);
  expect_bit_exact_resume(d, 4);
  EXPECT_FALSE(fs::exists(d / "ck" / ".step_00000006.tmp"));  // cleared by the next save
  fs::remove_all(d);
}

}  // namespace
