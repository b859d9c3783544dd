// The memory check before anything is allocated (docs/reliability.md, "The
// memory check"): the readers of MemAvailable and the cgroup limit on
// hand-written /proc and /sys contents, and moe-train, moe-bench and moe-eval
// refusing a plan larger than a faked available figure in one line, exit 2,
// having written nothing; --force going on with a warning; a plan that fits
// running; and the 1B benchmark refused on a machine without the memory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "plan/memory_check.h"
#include "plan/memory_plan.h"
#include "runtime/device_info.h"
#include "support/command.h"
#include "config/config.h"
#include "core/host_memory.h"
#include "support/val_shard.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using test::CommandResult;

constexpr uint64_t kMiB = uint64_t(1) << 20, kGiB = uint64_t(1) << 30;

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("moe_memcheck_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// ---- the readers ----

TEST(HostMemory, MemAvailableFromMeminfo) {
  const std::string meminfo =
      "MemTotal:       24578044 kB\n"
      "MemFree:        21001234 kB\n"
      "MemAvailable:   23428116 kB\n"
      "Buffers:          123456 kB\n";
  EXPECT_EQ(meminfo_available(meminfo), uint64_t(23428116) * 1024);
  // Kernels before 3.14 have no MemAvailable: unknown, not 0.
  EXPECT_FALSE(meminfo_available("MemTotal: 100 kB\nMemFree: 50 kB\n"));
  EXPECT_FALSE(meminfo_available("MemAvailable: lots kB\n"));
  EXPECT_FALSE(meminfo_available("MemAvailable: 100\n"));  // no unit
  EXPECT_FALSE(meminfo_available("XMemAvailable: 100 kB\n"));
  EXPECT_FALSE(meminfo_available(""));
}

TEST(HostMemory, CgroupHeadroomIsTheLimitLessTheUnreclaimableUse) {
  // v2: 2 GiB limit, 1.5 GiB in use of which 256 MiB inactive page cache.
  EXPECT_EQ(cgroup_headroom("2147483648\n", "1610612736\n",
                            "anon 1342177280\nfile 268435456\ninactive_file 268435456\n"),
            2 * kGiB - (1536 * kMiB - 256 * kMiB));
  EXPECT_EQ(cgroup_headroom("2147483648", "1073741824", ""), 1 * kGiB);  // no memory.stat
  EXPECT_FALSE(cgroup_headroom("max\n", "1073741824\n", ""));          // v2: no limit
  // v1 writes "no limit" as the largest page multiple below 2^63.
  EXPECT_FALSE(cgroup_headroom("9223372036854771712\n", "2891198464\n", ""));
  // Over the limit (the kernel is reclaiming): no room, not a wrapped number.
  EXPECT_EQ(cgroup_headroom("1073741824", "1100000000", ""), 0u);
  // v1: total_inactive_file (this cgroup and its children) wins over inactive_file.
  EXPECT_EQ(cgroup_headroom("1073741824", "536870912",
                            "inactive_file 1048576\ntotal_inactive_file 268435456\n"),
            1 * kGiB - 256 * kMiB);
  EXPECT_FALSE(cgroup_headroom("a lot", "1", ""));
  EXPECT_FALSE(cgroup_headroom("1073741824", "", ""));
}

// A made-up root: /proc/self/{mountinfo,cgroup}, /proc/meminfo and the
// cgroup files under /sys/fs/cgroup.
struct FakeRoot {
  fs::path root;
  explicit FakeRoot(const std::string& name) : root(temp_dir(name)) {}
  ~FakeRoot() { fs::remove_all(root); }
  void file(const std::string& path, const std::string& text) { write(root / path, text); }
};

const char* kMountsV2 =
    "24 1 0:22 / / rw,relatime - ext4 /dev/root rw\n"
    "31 24 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate\n";
// A hybrid host, as this project's build machine: memory on v1, an empty
// unified hierarchy beside it.
const char* kMountsHybrid =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(HostMemory, CgroupV2TakesTheTightestAncestor) {
  FakeRoot r("v2");
  r.file("proc/self/mountinfo", kMountsV2);
  r.file("proc/self/cgroup", "0::/job_42/step_0\n");
  // The step has no limit of its own; the job's 4 GiB has 1 GiB left.
  r.file("sys/fs/cgroup/job_42/step_0/memory.max", "max\n");
  r.file("sys/fs/cgroup/job_42/step_0/memory.current", "1073741824\n");
  r.file("sys/fs/cgroup/job_42/memory.max", "4294967296\n");
  r.file("sys/fs/cgroup/job_42/memory.current", "3221225472\n");
  r.file("sys/fs/cgroup/job_42/memory.stat", "inactive_file 0\n");
  const auto cg = cgroup_available(r.root);
  ASSERT_TRUE(cg);
  EXPECT_EQ(cg->bytes, 1 * kGiB);
  EXPECT_EQ(cg->source, "cgroup memory.max");
  // MemAvailable 8 GiB: the cgroup's 1 GiB is the figure.
  r.file("proc/meminfo", "MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\n");
  const auto host = host_available_memory(r.root);
  ASSERT_TRUE(host);
  EXPECT_EQ(host->bytes, 1 * kGiB);
  EXPECT_EQ(host->source, "cgroup memory.max");
  // A tighter step limit wins over the job's.
  r.file("sys/fs/cgroup/job_42/step_0/memory.max", "1610612736\n");
  EXPECT_EQ(cgroup_available(r.root)->bytes, 512 * kMiB);
}

TEST(HostMemory, CgroupV1MemoryControllerOfAHybridHost) {
  FakeRoot r("v1");
  r.file("proc/self/mountinfo", kMountsHybrid);
  r.file("proc/self/cgroup",
         "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n");
  r.file("sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes", "1073741824\n");
  r.file("sys/fs/cgroup/memory/process_api/abc/memory.usage_in_bytes", "268435456\n");
  r.file("sys/fs/cgroup/memory/process_api/memory.limit_in_bytes", "9223372036854771712\n");
  r.file("sys/fs/cgroup/memory/process_api/memory.usage_in_bytes", "268435456\n");
  r.file("proc/meminfo", "MemAvailable: 23428116 kB\n");
  const auto host = host_available_memory(r.root);
  ASSERT_TRUE(host);
  EXPECT_EQ(host->bytes, 768 * kMiB);
  EXPECT_EQ(host->source, "cgroup memory.limit_in_bytes");
  // No limit anywhere: MemAvailable.
  r.file("sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_FALSE(cgroup_available(r.root));
  EXPECT_EQ(host_available_memory(r.root)->bytes, uint64_t(23428116) * 1024);
  EXPECT_EQ(host_available_memory(r.root)->source, "MemAvailable");
}

// In a container's own cgroup namespace the mount point is the cgroup, and
// /proc/self/cgroup may show a path outside it ("/../.."): the mount's files.
TEST(HostMemory, CgroupPathOutsideTheMountIsTheMountItself) {
  FakeRoot r("ns");
  r.file("proc/self/mountinfo", kMountsV2);
  r.file("proc/self/cgroup", "0::/../../system.slice/docker-1.scope\n");
  r.file("sys/fs/cgroup/memory.max", "2147483648\n");
  r.file("sys/fs/cgroup/memory.current", "1073741824\n");
  ASSERT_TRUE(cgroup_available(r.root));
  EXPECT_EQ(cgroup_available(r.root)->bytes, 1 * kGiB);
  // Nothing there at all (not Linux): unknown.
  FakeRoot empty("none");
  EXPECT_FALSE(host_available_memory(empty.root));
}

TEST(MemoryHints, NameWhatTheConfigCanChange) {
  Config c;
  c.train.micro_batch = 4;
  c.train.global_batch = 16;
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  std::vector<std::string> h = training_memory_hints(c, BackendKind::Cpu, 1);
  EXPECT_TRUE(has(h, "lower train.micro_batch"));
  EXPECT_TRUE(has(h, "set train.recompute selective or full"));
  EXPECT_FALSE(has(h, "set train.zero 1"));  // one rank: nothing to shard over
  c.train.micro_batch = 1;
  c.train.recompute = Recompute::Full;
  EXPECT_TRUE(training_memory_hints(c, BackendKind::Cpu, 1).empty());
  h = training_memory_hints(c, BackendKind::Cpu, 4);
  EXPECT_TRUE(has(h, "set train.zero 1"));
  EXPECT_TRUE(has(h, "raise parallel.ep_size"));
  c.train.zero = 1;
  c.parallel.ep_size = 4;
  EXPECT_TRUE(training_memory_hints(c, BackendKind::Cpu, 4).empty());
}

// ---- the programs ----

const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";
const std::string kBenchTiny = std::string(MOE_SOURCE_DIR) + "/configs/bench/tiny.yaml";

CommandResult run(const std::string& program, const std::string& args,
                  const std::string& env = "") {
  return test::run_command(env + " " + std::string(MOE_BINARY_DIR) + "/" + program + " " + args);
}

const std::string kArmed = "MOE_FAULT_INJECTION: fault memory.available_mib";

// The output without the lines that contain `needle`.
std::string without_lines(const std::string& out, const std::string& needle) {
  std::string kept, line;
  std::stringstream lines(out);
  while (std::getline(lines, line))
    if (line.find(needle) == std::string::npos) kept += line + "\n";
  return kept;
}

// The output without the armed fault's own warning line (fault.h logs one
// wherever a point is read).
std::string without_fault_notice(const std::string& out) { return without_lines(out, kArmed); }

// A refusal: exit 2, one line (besides the fault's notice) with the planned
// and the available size and --force.
void expect_refused(const CommandResult& r, const std::string& program,
                    const std::string& available) {
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(kArmed), std::string::npos) << r.out;  // the notice of the seam
  const std::string err = without_fault_notice(r.out);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << r.out;
  EXPECT_EQ(err.rfind(program + ": error: the plan needs ", 0), 0u) << r.out;
  EXPECT_NE(err.find(" MiB per rank"), std::string::npos) << r.out;
  EXPECT_NE(err.find(", and " + available + " is available (MOE_FAULT_INJECTION memory.available_mib)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(err.find("pass --force to try anyway"), std::string::npos) << r.out;
}

std::string fake_mib(int mib) {
  return "MOE_FAULT_INJECTION=memory.available_mib=" + std::to_string(mib);
}

// The tiny model's plan in MiB: the figure the fake sizes are set against.
double tiny_plan_mib(const std::string& config, const std::vector<std::string>& sets) {
  return double(plan_memory(load_config(config, sets, 1), BackendKind::Cpu, 1).total()) /
         double(kMiB);
}

TEST(MemoryCheckCli, TrainRefusesAPlanLargerThanTheMemoryAndWritesNothing) {
  const fs::path d = temp_dir("train");
  const std::string args = "--config " + kTiny + " --set train.steps=2 --set train.threads=1" +
                           " --set log.out_dir=" + (d / "run").string() +
                           " --set checkpoint.dir=" + (d / "ckpt").string() +
                           " --set checkpoint.interval=1";
  ASSERT_GT(tiny_plan_mib(kTiny, {}), 1.0);  // so 1 MiB is too little
  const CommandResult r = run("moe-train", args, fake_mib(1));
  expect_refused(r, "moe-train", "1.0 MiB");
  // With a checkpoint.dir, the save's host copies count too: m and v, a copy
  // of the parameters and the per-tensor copies of all three, 6 x the weights.
  const MemoryPlan plan = plan_memory(load_config(kTiny, {}, 1), BackendKind::Cpu, 1);
  char save[160];
  std::snprintf(save, sizeof save,
                "needs %.1f MiB per rank and a checkpoint save %.1f MiB of host copies, %.1f MiB "
                "in all, and 1.0 MiB",
                double(plan.total()) / double(kMiB), 6.0 * double(plan.weights) / double(kMiB),
                double(plan.total() + 6 * plan.weights) / double(kMiB));
  EXPECT_NE(r.out.find(save), std::string::npos) << save << "\n" << r.out;
  // tiny.yaml: micro-batch 8 and no recompute; one rank, so no ZeRO or EP hint.
  EXPECT_NE(r.out.find("lower train.micro_batch, set train.recompute selective or full, or pass "
                       "--force"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(d / "run" / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(d / "ckpt"));

  // --force: one warning, and the run trains and checkpoints.
  const CommandResult f = run("moe-train", args + " --force", fake_mib(1));
  ASSERT_EQ(f.code, 0) << f.out;
  EXPECT_NE(f.out.find("memory: the plan needs "), std::string::npos) << f.out;
  EXPECT_NE(f.out.find("is available (MOE_FAULT_INJECTION memory.available_mib): trying anyway "
                       "(--force)"),
            std::string::npos)
      << f.out;
  EXPECT_TRUE(fs::exists(d / "run" / "metrics.jsonl"));
  EXPECT_TRUE(fs::exists(d / "ckpt" / "step_00000002"));

  // Enough memory (faked, then the machine's own figure): no word about it.
  fs::remove_all(d / "run");
  fs::remove_all(d / "ckpt");
  const CommandResult ok = run("moe-train", args, fake_mib(100000));
  ASSERT_EQ(ok.code, 0) << ok.out;
  EXPECT_EQ(ok.out.find("the plan needs"), std::string::npos) << ok.out;
  EXPECT_TRUE(fs::exists(d / "run" / "metrics.jsonl"));
  fs::remove_all(d / "run");
  const CommandResult real = run("moe-train", args);
  ASSERT_EQ(real.code, 0) << real.out;
  EXPECT_EQ(real.out.find("the plan needs"), std::string::npos) << real.out;
  fs::remove_all(d);
}

TEST(MemoryCheckCli, TrainHintsFollowTheConfig) {
  // Micro-batch 1 and full recompute leave only --force to suggest.
  const CommandResult r =
      run("moe-train",
          "--config " + kTiny + " --set train.micro_batch=1 --set train.recompute=full",
          fake_mib(0));
  expect_refused(r, "moe-train", "0.0 MiB");
  EXPECT_NE(r.out.find("is available (MOE_FAULT_INJECTION memory.available_mib); pass --force"),
            std::string::npos)
      << r.out;
  // A malformed fake is bad input too, in one line.
  const CommandResult bad = run("moe-train", "--config " + kTiny,
                                "MOE_FAULT_INJECTION=memory.available_mib=lots");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("memory.available_mib: expected a number of MiB, got 'lots'"),
            std::string::npos)
      << bad.out;
}

TEST(MemoryCheckCli, BenchRefusesBeforeMeasuringAndWritesNoJson) {
  const fs::path d = temp_dir("bench");
  const std::string args = "--config " + kBenchTiny +
                           " --backend cpu --steps 1 --warmup 0 --set train.threads=1 --json " +
                           (d / "b.json").string();
  const CommandResult r = run("moe-bench", args, fake_mib(1));
  expect_refused(r, "moe-bench", "1.0 MiB");
  EXPECT_EQ(r.out.find("gemm peak"), std::string::npos) << r.out;  // nothing measured
  EXPECT_FALSE(fs::exists(d / "b.json"));
  const CommandResult f = run("moe-bench", args + " --force", fake_mib(1));
  ASSERT_EQ(f.code, 0) << f.out;
  EXPECT_NE(f.out.find("trying anyway (--force)"), std::string::npos) << f.out;
  EXPECT_TRUE(fs::exists(d / "b.json"));
  fs::remove(d / "b.json");
  const CommandResult ok = run("moe-bench", args, fake_mib(100000));
  ASSERT_EQ(ok.code, 0) << ok.out;
  EXPECT_EQ(ok.out.find("the plan needs"), std::string::npos) << ok.out;
  fs::remove_all(d);
}

TEST(MemoryCheckCli, EvalRefusesBeforeLoadingAndWritesNoResult) {
  const fs::path d = temp_dir("eval");
  const CommandResult t =
      run("moe-train", "--config " + kTiny + " --set train.steps=1 --set train.threads=1" +
                           " --set log.out_dir=" + (d / "run").string() +
                           " --set checkpoint.dir=" + (d / "ckpt").string());
  ASSERT_EQ(t.code, 0) << t.out;
  test::write_val_shard(d / "val", 8 * 64);
  const fs::path ckpt = d / "ckpt" / "step_00000001";
  const std::string args = "--checkpoint " + ckpt.string() + " --data " + (d / "val").string() +
                           " --backend cpu --threads 1";
  const CommandResult r = run("moe-eval", args, fake_mib(1));
  expect_refused(r, "moe-eval", "1.0 MiB");
  EXPECT_NE(r.out.find("lower --batch, or pass --force"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(ckpt / "eval.json"));
  const CommandResult f = run("moe-eval", args + " --force", fake_mib(1));
  ASSERT_EQ(f.code, 0) << f.out;
  EXPECT_NE(f.out.find("trying anyway (--force)"), std::string::npos) << f.out;
  EXPECT_TRUE(fs::exists(ckpt / "eval.json"));
  fs::remove(ckpt / "eval.json");
  const CommandResult ok = run("moe-eval", args + " --batch 1", fake_mib(100000));
  ASSERT_EQ(ok.code, 0) << ok.out;
  EXPECT_EQ(ok.out.find("the plan needs"), std::string::npos) << ok.out;
  EXPECT_TRUE(fs::exists(ckpt / "eval.json"));
  fs::remove_all(d);
}

// The README's benchmark command on a machine without the memory for it (the
// issue's 23 GB machine: the OOM killer, exit 137, after 22.7 GB resident) is
// refused at once, by the machine's real figure, before anything is allocated.
TEST(MemoryCheckCli, OneBillionBenchIsRefusedWhereItCannotFit) {
  const std::string one_b = std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml";
  const Config c = load_config(one_b, {"data.source=synthetic"}, 1);
  const MemoryPlan plan = plan_memory(c, BackendKind::Cpu, 1);
  const std::optional<AvailableMemory> avail = host_available_memory();
  if (!avail) GTEST_SKIP() << "no MemAvailable here";
  if (avail->bytes >= plan.total())
    GTEST_SKIP() << "this machine has the memory for the 1B plan: not run";
  const CommandResult r = run("moe-bench", "--config " + one_b + " --backend cpu");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_EQ(r.out.rfind("moe-bench: error: the plan needs ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find(" GiB per rank, and "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("is available (" + avail->source + ")"), std::string::npos) << r.out;
}

// The README's command as written (train.backend auto), on any machine: with
// 1 GiB faked available, the one error line names the plan's GiB; on the CPU
// the only other line is the fallback's warning.
TEST(MemoryCheckCli, ReadmeBenchCommandIsRefusedWithTheFakedFigure) {
  const std::string one_b = std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml";
  const CommandResult r = run("moe-bench", "--config " + one_b, fake_mib(1024));
  EXPECT_EQ(r.code, 2) << r.out;
  std::string err = without_fault_notice(r.out);
  const bool on_cpu = !cuda_available();
  const std::string fallback = "train.backend auto: running on the CPU: ";
  if (on_cpu) {
    EXPECT_NE(err.find(fallback), std::string::npos) << r.out;
    err = without_lines(err, fallback);
  }
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << r.out;
  EXPECT_EQ(err.rfind("moe-bench: error: the plan needs ", 0), 0u) << r.out;
  // The 1B preset's plan is tens of GiB: far over the 1 GiB given.
  const Config c = load_config(one_b, {"data.source=synthetic"}, 1);
  const double plan_gib =
      double(plan_memory(c, on_cpu ? BackendKind::Cpu : BackendKind::Cuda, 1).total()) /
      double(kGiB);
  ASSERT_GT(plan_gib, 10.0);
  char want[96];
  std::snprintf(want, sizeof want, "needs %.1f GiB per rank, and 1.0 GiB is available", plan_gib);
  EXPECT_NE(err.find(want), std::string::npos) << r.out;
  EXPECT_NE(err.find("lower train.micro_batch"), std::string::npos) << r.out;
}

// --force is in each program's --help.
TEST(MemoryCheckCli, HelpListsForce) {
  for (const char* program : {"moe-train", "moe-bench", "moe-eval"}) {
    const CommandResult r = run(program, "--help");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("  --force "), std::string::npos) << program << ": " << r.out;
  }
}

// train.backend auto that lands on the CPU says so once, with the reason; an
// explicit cpu does not.
TEST(MemoryCheckCli, BackendAutoOnTheCpuSaysWhy) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is visible: auto is CUDA";
  const fs::path d = temp_dir("auto");
  const std::string args = "--config " + kTiny + " --set train.steps=1 --set train.threads=1" +
                           " --set log.out_dir=" + (d / "run").string();
  const CommandResult a = run("moe-train", args + " --set train.backend=auto");
  ASSERT_EQ(a.code, 0) << a.out;
  const std::string want = "train.backend auto: running on the CPU: ";
  const size_t at = a.out.find(want);
  ASSERT_NE(at, std::string::npos) << a.out;
  EXPECT_EQ(a.out.find(want, at + 1), std::string::npos) << a.out;  // once
#ifdef MOE_WITH_CUDA
  EXPECT_NE(a.out.find(want + "no CUDA device is visible"), std::string::npos) << a.out;
#else
  EXPECT_NE(a.out.find(want + "this build has no CUDA (configure with -DMOE_CUDA=ON)"),
            std::string::npos)
      << a.out;
#endif
  const CommandResult c = run("moe-train", args + " --set train.backend=cpu");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_EQ(c.out.find("train.backend auto"), std::string::npos) << c.out;
  fs::remove_all(d);
}

}  // namespace
}  // namespace moe
