// One writer per run directory (src/core/dir_lock.h, docs/reliability.md):
// a second holder is refused with the first one's host, PID and start time;
// a lock left by a killed holder never blocks; keep-aside never moves it;
// and, as programs, two moe-train started together on one log.out_dir (or
// one checkpoint.dir): exactly one trains, byte for byte as it would alone,
// and the other exits 2 with one line naming the directory and the winner.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "core/dir_lock.h"
#include "core/error.h"
#include "core/keep_aside.h"

namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("moe_runlock_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return fs::canonical(d);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string hostname() {
  char h[256] = {};
  gethostname(h, sizeof h - 1);
  return h;
}

// Tries to lock `dir` in a child process (a separate open file, as another
// program would); returns the refusal's message, or "" when it got the lock.
std::string try_lock_in_child(const fs::path& dir) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string msg;
    try {
      const moe::DirLock again(dir.string(), "log.out_dir", "moe-train");
    } catch (const moe::InputError& e) {
      msg = e.what();
    }
    const ssize_t ignored = write(fds[1], msg.data(), msg.size());
    (void)ignored;
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return msg;
}

TEST(DirLock, ASecondHolderIsRefusedNamingTheFirst) {
  const fs::path d = temp_dir("second");
  const moe::DirLock lock((d / "run").string(), "log.out_dir", "moe-train");
  EXPECT_EQ(lock.path(), (d / "run" / ".moe.lock").string());  // inside, created
  const std::string msg = try_lock_in_child(d / "run");
  EXPECT_NE(msg.find((d / "run").string() + " is in use by another moe-train (host " + hostname() +
                     ", pid " + std::to_string(getpid()) + ", since "),
            std::string::npos)
      << msg;
  EXPECT_TRUE(std::regex_search(msg, std::regex(R"(since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); )")))
      << msg;
  EXPECT_NE(msg.find("wait for it or use another log.out_dir"), std::string::npos) << msg;
  // Other spellings of the same directory are the same lock.
  EXPECT_NE(try_lock_in_child(d / "run" / ""), "");
  EXPECT_NE(try_lock_in_child(d / "x" / ".." / "run"), "");
  fs::create_directory_symlink(d / "run", d / "link");
  EXPECT_NE(try_lock_in_child(d / "link"), "");
  EXPECT_EQ(try_lock_in_child(d / "other"), "");  // another directory is free
  fs::remove_all(d);
}

TEST(DirLock, ALockLeftByAKilledHolderDoesNotBlock) {
  const fs::path d = temp_dir("stale");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t holder = fork();
  if (holder == 0) {
    const moe::DirLock lock((d / "run").string(), "log.out_dir", "moe-train");
    const ssize_t ignored = write(fds[1], "x", 1);
    (void)ignored;
    for (;;) pause();
  }
  char c;
  ASSERT_EQ(read(fds[0], &c, 1), 1);
  const std::string refused = try_lock_in_child(d / "run");
  EXPECT_NE(refused.find("pid " + std::to_string(holder) + ","), std::string::npos) << refused;
  kill(holder, SIGKILL);  // as the OOM killer or a node failure would
  waitpid(holder, nullptr, 0);
  // Its file is still there, naming the dead holder, and blocks nothing.
  EXPECT_NE(slurp(d / "run" / ".moe.lock").find("pid " + std::to_string(holder) + ","), std::string::npos);
  const moe::DirLock lock((d / "run").string(), "log.out_dir", "moe-train");
  const std::string now = slurp(d / "run" / ".moe.lock");
  EXPECT_NE(now.find("pid " + std::to_string(getpid()) + ","), std::string::npos) << now;
  EXPECT_EQ(std::count(now.begin(), now.end(), '\n'), 1) << now;  // rewritten, not appended
  close(fds[0]);
  close(fds[1]);
  fs::remove_all(d);
}

TEST(DirLock, KeepAsideLeavesTheLockWithThePath) {
  const fs::path d = temp_dir("aside");
  fs::create_directories(d / "ck" / "step_00000002");
  std::ofstream(d / "ck" / "latest") << "step_00000002\n";
  const moe::DirLock lock((d / "ck").string(), "checkpoint.dir", "moe-train");
  EXPECT_EQ(moe::keep_aside((d / "ck").string(), moe::kDirLockName), (d / "ck.1").string());
  // The checkpoints moved; the lock file stayed, and is still held, for the
  // path both runs name.
  EXPECT_TRUE(fs::is_directory(d / "ck.1" / "step_00000002"));
  EXPECT_EQ(slurp(d / "ck.1" / "latest"), "step_00000002\n");
  EXPECT_FALSE(fs::exists(d / "ck.1" / moe::kDirLockName));
  EXPECT_EQ(std::distance(fs::directory_iterator(d / "ck"), {}), 1);  // the lock file alone
  EXPECT_TRUE(fs::exists(d / "ck" / moe::kDirLockName));
  EXPECT_NE(try_lock_in_child(d / "ck"), "");
  // A directory without a lock file still moves whole.
  fs::create_directories(d / "old" / "step_00000001");
  EXPECT_EQ(moe::keep_aside((d / "old").string(), moe::kDirLockName), (d / "old.1").string());
  EXPECT_FALSE(fs::exists(d / "old"));
  EXPECT_TRUE(fs::is_directory(d / "old.1" / "step_00000001"));
  fs::remove_all(d);
}

// checkpoint.dir: runs/x with log.out_dir: runs/x/logs. Setting the old
// checkpoints aside must not carry the held log directory (and its lock)
// along, or a second run could lock a fresh runs/x/logs beside the first.
TEST(DirLock, KeepAsideLeavesANestedLockedDirectory) {
  const fs::path d = temp_dir("nested");
  fs::create_directories(d / "x" / "step_00000002");
  const moe::DirLock logs((d / "x" / "logs").string(), "log.out_dir", "moe-train");
  const moe::DirLock ck((d / "x").string(), "checkpoint.dir", "moe-train");
  std::ofstream(d / "x" / "logs" / "metrics.jsonl") << "{}\n";
  // Spelled with a trailing '/': the same directory, set aside beside it.
  EXPECT_EQ(moe::keep_aside((d / "x").string() + "/", moe::kDirLockName), (d / "x.1").string());
  EXPECT_TRUE(fs::is_directory(d / "x.1" / "step_00000002"));
  EXPECT_FALSE(fs::exists(d / "x.1" / "logs"));
  EXPECT_EQ(slurp(d / "x" / "logs" / "metrics.jsonl"), "{}\n");
  EXPECT_NE(try_lock_in_child(d / "x" / "logs"), "");  // still held, where it was
  EXPECT_NE(try_lock_in_child(d / "x"), "");
  fs::remove_all(d);
}

TEST(DirLock, EachDirectoryIsLockedOnce) {
  const fs::path d = temp_dir("once");
  // checkpoint.dir = log.out_dir (two spellings): one lock, named by the first key.
  const auto same = moe::lock_dirs(
      {{(d / "run").string(), "log.out_dir"}, {(d / "run" / "").string(), "checkpoint.dir"}},
      "moe-train");
  EXPECT_EQ(same.size(), 1u);
  // The default layout, checkpoint.dir = <out_dir>/checkpoints: two locks.
  const auto nested = moe::lock_dirs({{(d / "r2").string(), "log.out_dir"},
                                      {(d / "r2" / "checkpoints").string(), "checkpoint.dir"},
                                      {"", "unset"}},
                                     "moe-train");
  ASSERT_EQ(nested.size(), 2u);
  EXPECT_NE(try_lock_in_child(d / "r2"), "");
  EXPECT_NE(try_lock_in_child(d / "r2" / "checkpoints"), "");
  fs::remove_all(d);
}

// ------------------------------------------------------------ the programs

const std::string kTrain = std::string(MOE_BINARY_DIR) + "/moe-train";
const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";

pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    FILE* f = fopen(log.c_str(), "w");
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    std::vector<char*> argv{const_cast<char*>(kTrain.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(kTrain.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<std::string> args(const fs::path& out, const fs::path& ckpt, const std::string& lr) {
  return {"--config", kTiny, "--set", "train.steps=4", "--set", "checkpoint.interval=2", "--set",
          "train.threads=1", "--set", "train.lr=" + lr, "--set", "log.out_dir=" + out.string(),
          "--set", "checkpoint.dir=" + ckpt.string()};
}

std::vector<double> losses(const fs::path& metrics) {
  std::ifstream f(metrics);
  std::vector<double> out;
  for (std::string line; std::getline(f, line);)
    out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  return out;
}

// Two runs started together, with different learning rates: exactly one
// trains, the other is refused naming `contended` and the winner; the
// winner's checkpoints and losses are those of the same run alone.
void race(const fs::path& d, const std::vector<std::string> (&run)[2], const fs::path (&out)[2],
          const fs::path (&ckpt)[2], const fs::path& contended, const std::string& key) {
  const pid_t pids[2] = {spawn(run[0], d / "log0"), spawn(run[1], d / "log1")};
  const int codes[2] = {wait_exit(pids[0]), wait_exit(pids[1])};
  ASSERT_EQ(std::min(codes[0], codes[1]), 0) << slurp(d / "log0") << slurp(d / "log1");
  ASSERT_EQ(std::max(codes[0], codes[1]), 2) << slurp(d / "log0") << slurp(d / "log1");
  const int w = codes[0] == 0 ? 0 : 1, l = 1 - w;
  const std::string refusal = slurp(d / ("log" + std::to_string(l)));
  EXPECT_EQ(refusal, "moe-train: error: " + contended.string() +
                         " is in use by another moe-train (host " + hostname() + ", pid " +
                         std::to_string(pids[w]) + ", since " +
                         refusal.substr(refusal.find("since ") + 6, 20) +
                         "); wait for it or use another " + key + "\n");
  // The refused run touched nothing: no metrics of its own, nothing set aside.
  if (out[l] != out[w]) {
    EXPECT_FALSE(fs::exists(out[l] / "metrics.jsonl"));
  }
  EXPECT_FALSE(fs::exists(out[w] / "metrics.1.jsonl"));
  EXPECT_FALSE(fs::exists(ckpt[w].string() + ".1"));

  // The winner alone, elsewhere.
  std::vector<std::string> alone = run[w];
  for (auto& a : alone) {
    if (a == "log.out_dir=" + out[w].string()) a = "log.out_dir=" + (d / "alone").string();
    if (a == "checkpoint.dir=" + ckpt[w].string())
      a = "checkpoint.dir=" + (d / "alone_ck").string();
  }
  ASSERT_EQ(wait_exit(spawn(alone, d / "log_alone")), 0) << slurp(d / "log_alone");
  EXPECT_EQ(losses(out[w] / "metrics.jsonl"), losses(d / "alone" / "metrics.jsonl"));
  EXPECT_EQ(losses(out[w] / "metrics.jsonl").size(), 4u);
  for (const char* step : {"step_00000002", "step_00000004"})
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      const std::string ours = slurp(ckpt[w] / step / file);
      EXPECT_FALSE(ours.empty()) << step << "/" << file;
      EXPECT_TRUE(ours == slurp(d / "alone_ck" / step / file)) << step << "/" << file;
    }
}

std::vector<std::pair<std::string, std::string>> files_under(const fs::path& d) {
  std::vector<std::pair<std::string, std::string>> out;  // (relative path, bytes)
  for (const auto& e : fs::recursive_directory_iterator(d))
    if (e.is_regular_file() && e.path().filename() != moe::kDirLockName)  // rewritten by a holder
      out.emplace_back(fs::relative(e.path(), d).string(), slurp(e.path()));
  std::sort(out.begin(), out.end());
  return out;
}

// The issue's case: a finished (or running) run's directory, and a fresh
// moe-train on it, which without the lock moved the first run's checkpoints
// to checkpoints.1 and its metrics to metrics.1.jsonl. Held, by the log.out_dir
// or by the checkpoint.dir alone, it is refused with one line, exit 2, and
// every file of the first run stays as it was.
TEST(RunLock, AHeldRunDirectoryIsRefusedBeforeAnythingMoves) {
  const fs::path d = temp_dir("held");
  const fs::path out = d / "run", ck = d / "run" / "checkpoints";
  ASSERT_EQ(wait_exit(spawn(args(out, ck, "3e-3"), d / "log0")), 0) << slurp(d / "log0");
  const auto before = files_under(d);
  ASSERT_FALSE(before.empty());
  const std::string holder =
      "(host " + hostname() + ", pid " + std::to_string(getpid()) + ", since ";
  {
    const moe::DirLock held(out.string(), "log.out_dir", "moe-train");
    ASSERT_EQ(wait_exit(spawn(args(out, ck, "1e-3"), d / "log1")), 2) << slurp(d / "log1");
    const std::string line = slurp(d / "log1");
    EXPECT_EQ(line.rfind("moe-train: error: " + out.string() + " is in use by another moe-train " +
                             holder, 0),
              0u)
        << line;
    EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
    EXPECT_TRUE(line.ends_with("); wait for it or use another log.out_dir\n")) << line;
  }
  {
    const moe::DirLock held(ck.string(), "checkpoint.dir", "moe-train");
    ASSERT_EQ(wait_exit(spawn(args(d / "other", ck, "1e-3"), d / "log2")), 2) << slurp(d / "log2");
    EXPECT_EQ(slurp(d / "log2").rfind("moe-train: error: " + ck.string() +
                                          " is in use by another moe-train " + holder, 0),
              0u)
        << slurp(d / "log2");
  }
  fs::remove(d / "log1");
  fs::remove(d / "log2");
  EXPECT_EQ(files_under(d), before);  // nothing moved aside, nothing written
  fs::remove_all(d);
}

// A lock file left by a killed moe-train blocks nothing: the next run trains.
TEST(RunLock, ARunKilledWithItsLockDoesNotBlockTheNext) {
  const fs::path d = temp_dir("killed");
  std::vector<std::string> forever = args(d / "run", d / "run" / "checkpoints", "3e-3");
  forever.insert(forever.end(), {"--set", "train.steps=100000", "--set", "log.interval=1"});
  const pid_t first = spawn(forever, d / "log0");
  for (int i = 0; i < 1200 && !fs::exists(d / "run" / "metrics.jsonl"); ++i) usleep(50000);
  ASSERT_TRUE(fs::exists(d / "run" / "metrics.jsonl")) << slurp(d / "log0");
  kill(first, SIGKILL);
  EXPECT_EQ(wait_exit(first), 128 + SIGKILL);
  ASSERT_NE(slurp(d / "run" / moe::kDirLockName).find("pid " + std::to_string(first) + ","),
            std::string::npos);
  const auto next = args(d / "run", d / "run" / "checkpoints", "3e-3");
  ASSERT_EQ(wait_exit(spawn(next, d / "log1")), 0) << slurp(d / "log1");
  EXPECT_EQ(losses(d / "run" / "metrics.jsonl").size(), 4u);
  fs::remove_all(d);
}

TEST(RunLock, TwoTrainingsInOneOutDirOneTrainsTheOtherIsRefused) {
  const fs::path d = temp_dir("outdir");
  const fs::path out[2] = {d / "run", d / "run"}, ckpt[2] = {d / "run" / "checkpoints",
                                                             d / "run" / "checkpoints"};
  const std::vector<std::string> run[2] = {args(out[0], ckpt[0], "3e-3"),
                                           args(out[1], ckpt[1], "1e-3")};
  race(d, run, out, ckpt, d / "run", "log.out_dir");
  fs::remove_all(d);
}

TEST(RunLock, TwoTrainingsSharingOnlyACheckpointDirOneTrains) {
  const fs::path d = temp_dir("ckdir");
  const fs::path out[2] = {d / "a", d / "b"}, ckpt[2] = {d / "ck", d / "ck"};
  const std::vector<std::string> run[2] = {args(out[0], ckpt[0], "3e-3"),
                                           args(out[1], ckpt[1], "1e-3")};
  race(d, run, out, ckpt, d / "ck", "checkpoint.dir");
  fs::remove_all(d);
}

}  // namespace
