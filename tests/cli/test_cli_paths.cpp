// Output paths and checkpoint state checked before any work (issue 23,
// docs/reliability.md): moe-train, moe-eval and moe-export refuse a path they
// could not write with one line and exit code 2 before training, evaluating
// or exporting; a checkpoint whose trainer_state.json or tensors do not agree
// with themselves is refused on load, naming the file, the field and the
// previous checkpoint; moe-eval --max-tokens never replaces a full eval.json.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/common.h"
#include "support/command.h"
#include "core/dir_lock.h"
#include "train/safetensors.h"
#include "support/val_shard.h"

namespace {

namespace fs = std::filesystem;
using moe::test::CommandResult;
using moe::test::expect_one_line_error;
using moe::test::run_command;

const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";
const std::string kBin = std::string(MOE_BINARY_DIR) + "/";

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("moe_clipaths_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void touch(const fs::path& p) { std::ofstream(p) << "not a directory\n"; }

// moe-train on the tiny config, one thread, with the given output paths.
CommandResult train(const std::string& ckpt, const std::string& out_dir, int64_t steps,
                    const std::string& extra = "") {
  return run_command(kBin + "moe-train --config " + kTiny + " --set train.steps=" +
                     std::to_string(steps) + " --set train.threads=1 --set checkpoint.interval=2" +
                     " --set checkpoint.dir=" + ckpt + " --set log.out_dir=" + out_dir + " " +
                     extra);
}

TEST(CliPaths, TrainRefusesAnUnwritableOutputPathBeforeStep1) {
  const fs::path d = temp_dir("train");
  const fs::path file = d / "file";
  touch(file);
  const std::string run = (d / "run").string(), ck = (d / "ck").string();
  // A checkpoint.dir that is a file; one below a file; a log.out_dir below a
  // file (each fails even as root).
  expect_one_line_error(train(file.string(), run, 2),
                        "checkpoint.dir: " + file.string() + ": exists and is not a directory");
  expect_one_line_error(train((file / "x").string(), run, 2),
                        "checkpoint.dir: " + (file / "x").string() +
                            ": cannot create: Not a directory");
  expect_one_line_error(train(ck, (file / "x").string(), 2),
                        "log.out_dir: " + (file / "x").string() +
                            ": cannot create: Not a directory");
  // Nothing trained: no metrics, no checkpoint (the last run may have created
  // and locked ck before its log.out_dir was refused: then ck holds the lock file only).
  EXPECT_FALSE(fs::exists(d / "run" / "metrics.jsonl"));
  if (fs::exists(d / "ck")) {
    for (const auto& e : fs::directory_iterator(d / "ck"))
      EXPECT_EQ(e.path().filename().string(), moe::kDirLockName);
  }
  // Good paths are created and train (the probe leaves nothing behind).
  const CommandResult ok = train(ck, run, 2);
  ASSERT_EQ(ok.code, 0) << ok.out;
  EXPECT_TRUE(fs::exists(d / "ck" / "step_00000002" / "trainer_state.json"));
  for (const auto& e : fs::directory_iterator(d / "ck"))
    EXPECT_EQ(e.path().filename().string().find(".moe-write-probe"), std::string::npos);
  fs::remove_all(d);
}

TEST(CliPaths, TrainRefusesAReadOnlyCheckpointDirBeforeStep1) {
  const fs::path d = temp_dir("readonly");
  const fs::path ck = d / "ck";
  fs::create_directories(ck);
  fs::permissions(ck, fs::perms::owner_read | fs::perms::owner_exec);
  // As root (or with CAP_DAC_OVERRIDE) the mode does not stop writes.
  const std::string probe = (ck / "probe").string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd >= 0) {
    ::close(fd);
    fs::remove(probe);
    fs::permissions(ck, fs::perms::owner_all);
    fs::remove_all(d);
    GTEST_SKIP() << "this user writes into a read-only directory (root): nothing to test";
  }
  expect_one_line_error(train(ck.string(), (d / "run").string(), 2),
                        "checkpoint.dir: " + ck.string() +
                            ": cannot create files in it: Permission denied");
  EXPECT_FALSE(fs::exists(d / "run" / "metrics.jsonl"));
  fs::permissions(ck, fs::perms::owner_all);
  fs::remove_all(d);
}

// A run of 4 steps with checkpoints at steps 2 and 4 (and a validation split).
struct Checkpoints {
  fs::path d;
  explicit Checkpoints(const std::string& name) : d(temp_dir(name)) {
    moe::test::write_val_shard(d / "val", 64 * 4 + 1);
    const CommandResult r = train((d / "ck").string(), (d / "run").string(), 4,
                                  "--set data.val_path=" + (d / "val").string());
    EXPECT_EQ(r.code, 0) << r.out;
  }
  ~Checkpoints() { fs::remove_all(d); }
  fs::path step(int s) const {
    char name[32];
    std::snprintf(name, sizeof name, "step_%08d", s);
    return d / "ck" / name;
  }
  CommandResult resume(const fs::path& from) const {
    return train((d / "ck").string(), (d / "run2").string(), 6, "--resume " + from.string());
  }
};

void set_state(const fs::path& ckpt, const std::string& key, int64_t value) {
  const fs::path p = ckpt / "trainer_state.json";
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(slurp(p));
  j[key] = value;
  std::ofstream(p) << j.dump(2) << '\n';
}

// Element `index` of tensor `name` in a checkpoint's safetensors file set to NaN.
void poison(const fs::path& file, const std::string& name, size_t index) {
  moe::SafeTensorFile f = moe::read_safetensors(file.string());
  moe::SafeTensor& t = f.tensors.at(name);
  ASSERT_EQ(t.dtype, "F32");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(t.data.data() + index * sizeof(float), &nan, sizeof nan);
  moe::write_safetensors(file.string(), f);
}

TEST(CliPaths, ResumeRefusesAStepThatIsNotItsDirectorys) {
  const Checkpoints c("step47");
  // The case: "step": 47 inside step_00000040.
  const fs::path forty = c.d / "ck" / "step_00000040";
  fs::rename(c.step(4), forty);
  set_state(forty, "step", 47);
  const CommandResult r = c.resume(forty);
  expect_one_line_error(r, (forty / "trainer_state.json").string() +
                               ": step 47 does not match the directory step_00000040");
  EXPECT_NE(r.out.find("use the previous checkpoint, " + c.step(2).string()), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(c.d / "run2" / "metrics.jsonl"));
}

TEST(CliPaths, ResumeRefusesANegativeStepAndBadCounters) {
  const Checkpoints c("counters");
  const fs::path four = c.step(4);
  const std::string state = (four / "trainer_state.json").string();
  const std::string prev = "use the previous checkpoint, " + c.step(2).string();
  set_state(four, "step", -4);
  CommandResult r = c.resume(four);
  expect_one_line_error(r, state + ": step -4 is negative");
  EXPECT_NE(r.out.find(prev), std::string::npos) << r.out;

  set_state(four, "step", 4);
  set_state(four, "skipped_steps", 9);
  expect_one_line_error(c.resume(four), state + ": skipped_steps 9 is outside [0, step 4]");

  // 4 steps of 16 sequences of 64 tokens are 4096 tokens; one more sequence
  // is not what these steps read.
  set_state(four, "skipped_steps", 0);
  set_state(four, "tokens_seen", 4096 + 64);
  expect_one_line_error(c.resume(four),
                        state + ": tokens_seen 4160 does not match the steps: 4096 expected");

  // The first checkpoint has none before it, and says so.
  set_state(c.step(2), "step", 3);
  r = c.resume(c.step(2));
  expect_one_line_error(r, "step 3 does not match the directory step_00000002");
  EXPECT_NE(r.out.find("there is no earlier checkpoint"), std::string::npos) << r.out;

  // moe-eval reads the same state and refuses it too.
  expect_one_line_error(run_command(kBin + "moe-eval --checkpoint " + four.string() + " --data " +
                                    (c.d / "val").string() + " --threads 1"),
                        state + ": tokens_seen 4160");
}

// Tensors are read when the model is built, after the resume has logged the
// settings it changes: exit 2, one error line, the last, and no step trained.
void expect_refused_on_load(const CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.code, 2) << r.out;
  const size_t error = r.out.find("moe-train: error: ");
  ASSERT_NE(error, std::string::npos) << r.out;
  EXPECT_NE(r.out.find(needle, error), std::string::npos)
      << "want '" << needle << "' in: " << r.out;
  EXPECT_EQ(r.out.find('\n', error), r.out.size() - 1) << r.out;
  EXPECT_EQ(r.out.find("step 5/6"), std::string::npos) << r.out;
}

TEST(CliPaths, ResumeRefusesNonFiniteWeightsAndMoments) {
  const Checkpoints c("nan");
  const fs::path four = c.step(4);
  const std::string prev = "use the previous checkpoint, " + c.step(2).string();
  fs::copy(four, c.d / "pristine", fs::copy_options::recursive);

  poison(four / "model.safetensors", "layers.1.attn.wqkv", 5);
  CommandResult r = c.resume(four);
  expect_refused_on_load(r, (four / "model.safetensors").string() +
                               ": layers.1.attn.wqkv holds a non-finite value at element 5");
  EXPECT_NE(r.out.find(prev), std::string::npos) << r.out;
  // moe-export would hand the same NaN to another framework: refused as well.
  expect_one_line_error(run_command(kBin + "moe-export --checkpoint " + four.string() +
                                    " --output " + (c.d / "hf").string()),
                        "layers.1.attn.wqkv holds a non-finite value");
  EXPECT_FALSE(fs::exists(c.d / "hf"));

  fs::remove_all(four);
  fs::copy(c.d / "pristine", four, fs::copy_options::recursive);
  poison(four / "optimizer.safetensors", "adam_v.layers.1.attn.wqkv", 7);
  r = c.resume(four);
  expect_refused_on_load(r, (four / "optimizer.safetensors").string() +
                               ": adam_v.layers.1.attn.wqkv holds a non-finite value at element 7");
  EXPECT_NE(r.out.find(prev), std::string::npos) << r.out;
}

TEST(CliPaths, EvalAndExportRefuseABadOutputBeforeTheWork) {
  const Checkpoints c("evalout");
  const fs::path file = c.d / "file";
  touch(file);
  const std::string eval = kBin + "moe-eval --checkpoint " + (c.d / "ck").string() + " --data " +
                           (c.d / "val").string() + " --threads 1 --output ";
  // Into a file's "directory", and onto a directory: one line, no evaluation.
  expect_one_line_error(run_command(eval + (file / "eval.json").string()),
                        "--output: " + (file / "eval.json").string() +
                            ": cannot write: Not a directory");
  expect_one_line_error(run_command(eval + c.d.string()),
                        "--output: " + c.d.string() + ": cannot write: Is a directory");

  // The issue's case: was "internal error: filesystem error: cannot remove:
  // Not a directory" and exit 1 after reading the checkpoint.
  const std::string x = (file / "x").string();
  expect_one_line_error(
      run_command(kBin + "moe-export --checkpoint " + (c.d / "ck").string() + " --output " + x),
      "--output: " + x + ": cannot create: Not a directory");
  EXPECT_EQ(slurp(file), "not a directory\n");
}

TEST(CliPaths, PartialEvalDoesNotReplaceTheFullOne) {
  const Checkpoints c("partial");
  const std::string eval = kBin + "moe-eval --checkpoint " + (c.d / "ck").string() + " --data " +
                           (c.d / "val").string() + " --threads 1";
  CommandResult r = run_command(eval);
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path full = c.step(4) / "eval.json";
  const std::string full_text = slurp(full);
  EXPECT_EQ(nlohmann::json::parse(full_text)["tokens"].get<int64_t>(), 64 * 4);

  r = run_command(eval + " --max-tokens 64");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(slurp(full), full_text);  // the full split's result stands
  const auto part = nlohmann::json::parse(slurp(c.step(4) / "eval_max64.json"));
  EXPECT_EQ(part["tokens"].get<int64_t>(), 64);
}

// A std::filesystem error that escapes a program is about a user's path:
// typed by its errno (exit 2; 1 for a failing disk), one line, never an
// "internal error" (was: "internal error: filesystem error: ...", exit 1).
TEST(CliPaths, FilesystemErrorsAreTypedByErrno) {
  const auto fail_with = [](int err) {
    return [err]() -> int {
      throw fs::filesystem_error("cannot remove", fs::path("a/file/x.tmp"),
                                 std::error_code(err, std::generic_category()));
    };
  };
  testing::internal::CaptureStderr();
  EXPECT_EQ(moe::run_main("prog", fail_with(ENOTDIR)), 2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(),
            "prog: error: a/file/x.tmp: cannot remove: " + std::string(std::strerror(ENOTDIR)) +
                "\n");
  testing::internal::CaptureStderr();
  EXPECT_EQ(moe::run_main("prog", fail_with(ENOSPC)), 1);
  EXPECT_EQ(testing::internal::GetCapturedStderr(),
            "prog: error: a/file/x.tmp: cannot remove: " + std::string(std::strerror(ENOSPC)) +
                "\n");
}

}  // namespace
