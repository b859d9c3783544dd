// A full or failing disk (issue 15, docs/reliability.md): every file
// operation of a checkpoint save, of moe-data prepare and of moe-export is
// made to fail in turn (core/file_io.h's fault seam, ENOSPC and EIO), and
// each time the previous state must be exactly as it was: the previous
// checkpoint stays `latest` and byte-identical, no partial directory or
// temporary file is left, the error is one line naming the file and the
// reason, and the metrics files keep every line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "support/command.h"
#include "support/small_run.h"
#include "core/dir_lock.h"
#include "core/error.h"
#include "core/file_io.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("moe_disk_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// Every file under root (hidden ones included) with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    out[fs::relative(e.path(), root).string() + (e.is_directory() ? "/" : "")] =
        e.is_directory() ? "" : read_bytes(e.path());
  return out;
}

// small_run.h's model, 4 steps, no final evaluation.
Config tiny_config(const fs::path& ckpt_dir) {
  Config c = test::small_config(BalanceMethod::LossFree, ckpt_dir);
  c.train.steps = 4;
  c.train.final_eval = false;
  return c;
}

struct TinyRun : test::TrainRun<float> {
  using test::TrainRun<float>::TrainRun;
  void step() { steps(1); }
};

// Operations of one clean save of this config's model (every save of it
// takes the same number).
int64_t operations_per_save(const Config& c) {
  TinyRun run(c);
  run.step();
  io::arm_io_fault(0, 0);
  run.trainer->save_checkpoint();
  return io::io_operations();
}

// Makes save number 1..N fail in turn, then checks that nothing changed.
void expect_every_failure_leaves_the_directory_as_it_was(TinyRun& run, const fs::path& dir,
                                                          int64_t ops, const std::string& latest) {
  const std::map<std::string, std::string> before = snapshot(dir);
  for (int64_t n = 1; n <= ops; ++n) {
    const int err = n % 2 ? ENOSPC : EIO;
    io::arm_io_fault(n, err);
    try {
      run.trainer->save_checkpoint();
      ADD_FAILURE() << "operation " << n << " of " << ops << " failed, yet the save succeeded";
    } catch (const IoError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("not saved"), std::string::npos) << what;
      EXPECT_NE(what.find(std::strerror(err)), std::string::npos) << what;
      EXPECT_NE(what.find("the latest checkpoint is still " + (dir / latest).string()),
                std::string::npos)
          << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
    io::arm_io_fault(0, 0);
    EXPECT_EQ(snapshot(dir), before) << "after a failure at operation " << n << " of " << ops;
    EXPECT_EQ(find_latest_checkpoint(dir.string()), (dir / latest).string());
  }
}

TEST(FullDisk, EveryFailingOperationOfACheckpointSaveLeavesThePreviousOneLatest) {
  const fs::path dir = temp_dir("save");
  const Config c = tiny_config(dir);
  const int64_t ops = operations_per_save(tiny_config(temp_dir("count")));
  ASSERT_GE(ops, 12);  // 3 files (create, writes, fsync, close), renames, dir syncs, latest
  std::printf("a checkpoint save: %lld file operations, each made to fail in turn\n",
              static_cast<long long>(ops));

  TinyRun run(c);
  run.step();
  run.step();
  const std::string first = run.trainer->save_checkpoint();
  ASSERT_EQ(fs::path(first).filename(), "step_00000002");
  run.step();  // step 3: a new state to save

  expect_every_failure_leaves_the_directory_as_it_was(run, dir, ops, "step_00000002");
  // The previous checkpoint still loads into a fresh model.
  TinyRun fresh(c);
  fresh.trainer->resume_from(first);
  EXPECT_EQ(fresh.trainer->next_step(), 2);

  // No fault: the same save goes through.
  io::arm_io_fault(0, 0);
  EXPECT_EQ(fs::path(run.trainer->save_checkpoint()).filename(), "step_00000003");
  // Saving step 3 again (its directory exists): a failure keeps the first copy.
  expect_every_failure_leaves_the_directory_as_it_was(run, dir, ops + 1, "step_00000003");
}

TEST(FullDisk, APeriodicSaveThatFailsIsLoggedAndTheRunGoesOn) {
  const fs::path root = temp_dir("periodic");
  Config c = tiny_config(root / "ck");
  c.checkpoint.interval = 2;
  c.log.out_dir = (root / "run").string();
  const int64_t ops = operations_per_save(tiny_config(temp_dir("count2")));
  {
    TinyRun run(c);
    MetricsLog log(c, "config", false);
    io::arm_io_fault(3, ENOSPC);  // inside the save of step 2
    EXPECT_EQ(run.trainer->run(&log), RunOutcome::Completed);
  }
  io::arm_io_fault(0, 0);
  EXPECT_EQ(find_latest_checkpoint(c.checkpoint.dir), (root / "ck" / "step_00000004").string());
  EXPECT_FALSE(fs::exists(root / "ck" / "step_00000002"));
  EXPECT_FALSE(fs::exists(root / "ck" / ".step_00000002.tmp"));
  std::ifstream metrics(root / "run" / "metrics.jsonl");
  const std::string lines((std::istreambuf_iterator<char>(metrics)), {});
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 4) << lines;

  // The last save of a run (here the end at step 3) must succeed, or the run fails.
  c.train.steps = 3;
  c.checkpoint.dir = (root / "ck3").string();
  c.log.out_dir = (root / "run3").string();
  {
    TinyRun run(c);
    MetricsLog log(c, "config", false);
    io::arm_io_fault(ops + 2, EIO);  // the second save: step 3
    EXPECT_THROW(run.trainer->run(&log), IoError);
  }
  io::arm_io_fault(0, 0);
  EXPECT_EQ(find_latest_checkpoint(c.checkpoint.dir), (root / "ck3" / "step_00000002").string());
  EXPECT_FALSE(fs::exists(root / "ck3" / "step_00000003"));
  std::ifstream metrics3(root / "run3" / "metrics.jsonl");
  const std::string lines3((std::istreambuf_iterator<char>(metrics3)), {});
  EXPECT_EQ(std::count(lines3.begin(), lines3.end(), '\n'), 3) << lines3;
}

// ---- the programs, with the fault armed through MOE_FAULT_INJECTION ----

test::CommandResult run_with_fault(int64_t n, const std::string& program, const std::string& args) {
  const std::string env = n > 0 ? "MOE_FAULT_INJECTION=io.fail_op=" + std::to_string(n) +
                                      (n % 2 ? "" : ":EIO") + " "
                                : "";
  return test::run_command(env + std::string(MOE_BINARY_DIR) + "/" + program + " " + args);
}

// The failure of operation n: exit code 1 and one error line with the reason.
void expect_io_failure(const test::CommandResult& r, int64_t n, const std::string& program) {
  EXPECT_EQ(r.code, 1) << "operation " << n << ": " << r.out;
  const std::string reason = std::strerror(n % 2 ? ENOSPC : EIO);
  const std::string line = program + ": error: ";
  EXPECT_EQ(r.out.find(line), r.out.rfind(line)) << "more than one error line: " << r.out;
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(reason), std::string::npos) << "operation " << n << ": " << r.out;
}

// Runs program with operation 1, 2, ... failing until it succeeds; check(n)
// inspects what each failure left. Returns the operations of a whole run.
template <typename Check>
int64_t fail_each_operation(const std::string& program, const std::string& args, Check check) {
  for (int64_t n = 1; n < 2000; ++n) {
    const test::CommandResult r = run_with_fault(n, program, args);
    if (r.code == 0) {
      std::printf("%s: %lld file operations, each made to fail in turn\n", program.c_str(),
                  static_cast<long long>(n - 1));
      return n - 1;
    }
    expect_io_failure(r, n, program);
    check(n);
    if (::testing::Test::HasFailure()) return -1;
  }
  ADD_FAILURE() << program << " never succeeded";
  return -1;
}

TEST(FullDisk, MoeTrainEndsWithOneLineWhenItsLastCheckpointCannotBeWritten) {
  const fs::path root = temp_dir("train");
  const std::string args = "--config " + std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml" +
                           " --set train.steps=2 --set train.threads=1 --set train.final_eval=false"
                           " --set log.out_dir=" + (root / "run").string() +
                           " --set checkpoint.dir=" + (root / "ck").string();
  const test::CommandResult r = run_with_fault(1, "moe-train", args);
  expect_io_failure(r, 1, "moe-train");
  EXPECT_NE(r.out.find("checkpoint of step 2 not saved"), std::string::npos) << r.out;
  const auto ck = snapshot(root / "ck");  // no partial directory; the run's lock file stays
  EXPECT_EQ(ck.size(), 1u);
  EXPECT_EQ(ck.count(kDirLockName), 1u);
  const std::string metrics = read_bytes(root / "run" / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 2) << metrics;
}

TEST(FullDisk, MoeDataPrepareLeavesNoPartOfItsOutput) {
  const fs::path root = temp_dir("prepare");
  fs::create_directories(root / "in");
  std::ofstream(root / "in" / "a.txt") << std::string(MOE_SOURCE_DIR);
  {
    std::ofstream f(root / "in" / "b.txt");
    for (int i = 0; i < 300; ++i) f << "paragraph " << i << " of words that repeat and repeat\n\n";
  }
  const test::CommandResult tok = test::run_command(
      std::string(MOE_BINARY_DIR) + "/moe-data tokenizer-train --input " + (root / "in").string() +
      " --vocab-size 300 --character-coverage 1 --output " + (root / "tok").string());
  ASSERT_EQ(tok.code, 0) << tok.out;
  const fs::path out = root / "shards";
  const std::string args = "prepare --tokenizer " + (root / "tok.model").string() + " --input " +
                           (root / "in").string() + " --output " + out.string() +
                           " --shard-tokens 500 --val-fraction 0.1 --threads 1";
  const int64_t ops = fail_each_operation("moe-data", args, [&](int64_t n) {
    EXPECT_TRUE(snapshot(out).empty()) << "operation " << n << " left files in " << out;
  });
  EXPECT_GE(ops, 8);
  EXPECT_TRUE(fs::exists(out / "summary.json"));
}

TEST(FullDisk, MoeExportLeavesNoPartOfItsOutput) {
  const fs::path root = temp_dir("export");
  const Config c = tiny_config(root / "ck");
  {
    TinyRun run(c);
    run.step();
    run.trainer->save_checkpoint();
  }
  const fs::path out = root / "hf";
  const std::string args = "--checkpoint " + (root / "ck").string() + " --output " +
                           out.string() + " --max-shard-mb 0.01";  // several weight files
  const int64_t ops = fail_each_operation("moe-export", args, [&](int64_t n) {
    EXPECT_FALSE(fs::exists(out)) << "operation " << n;
    EXPECT_FALSE(fs::exists(out.string() + ".tmp")) << "operation " << n;
  });
  EXPECT_GE(ops, 10);
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
}

}  // namespace
}  // namespace moe
