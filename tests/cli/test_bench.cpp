// moe-bench and what it stands on: the active-parameter and FLOP counts
// against hand counts, the peak table, phase timing and memory accounting on
// the CPU backend, and the moe-bench program end to end.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "plan/bench_attention.h"
#include "runtime/device_info.h"
#include "backend/backend.h"
#include "support/command.h"
#include "config/config.h"
#include "data/token_source.h"
#include "comm/comm.h"
#include "model/flops.h"
#include "model/transformer.h"
#include "train/trainer.h"

namespace {

using namespace moe;
namespace fs = std::filesystem;

const std::string kBenchTiny = std::string(MOE_SOURCE_DIR) + "/configs/bench/tiny.yaml";

// ------------------------------------------------------------ FLOP counts

// The paper's 1B model, by hand (D 1024, V 32064, 9 layers, first dense of
// width 4096, 2 shared + 64 routed experts of width 512, top-6, seq 2048):
//   attention 4 D^2 = 4,194,304; norms 2 D = 2,048 per layer
//   dense FFN 3 D 4096 = 12,582,912; one expert 3 D 512 = 1,572,864
//   MoE FFN active: router 64 D 65,536 + shared 2 x 1,572,864 + 6 x 1,572,864 = 12,648,448
//   dense layer 16,779,264 + 8 MoE layers x 16,844,800 = 151,537,664
//   + final norm 1,024 + LM head V D 32,833,536 = 184,372,224 active
//   FLOP/token = 6 x 184,372,224 + 12 x 9 x 1024 x 2048 = 1,106,233,344 + 226,492,416
// Total: active + embedding V D + 8 layers x 58 idle experts x 1,572,864.
TEST(Flops, PaperOneBillionByHand) {
  const Config c = load_config(MOE_SOURCE_DIR "/configs/paper/1b_loss_free.yaml");
  EXPECT_EQ(active_parameters(c.model, c.moe), 184372224);
  EXPECT_EQ(train_flops_per_token(c.model, c.moe), 1332725760);
  EXPECT_EQ(total_parameters(c.model, c.moe),
            184372224 + 32064LL * 1024 + 8LL * 58 * 1572864);
  // 214K tokens/s of the PyTorch reference on an H100 is 285 TFLOP/s
  // (285.2034; 0.1 is the quoted figure's rounding, not floating point).
  EXPECT_NEAR(214e3 * double(train_flops_per_token(c.model, c.moe)) / 1e12, 285.2, 0.1);

  // The bench preset measures exactly that model.
  const Config b = load_config(MOE_SOURCE_DIR "/configs/bench/1b.yaml");
  EXPECT_EQ(b.model, c.model);
  EXPECT_EQ(b.moe, c.moe);
  EXPECT_EQ(b.train.global_batch, 16);  // the reference's tokens per step
  EXPECT_EQ(b.train.micro_batch, 16);   // in one micro-batch, as the reference (plan: < 40 GiB)
  EXPECT_EQ(b.train.precision, Precision::BFloat16);
  EXPECT_EQ(b.data.source, DataSource::Synthetic);
}

// configs/bench/tiny.yaml by hand (D 64, V 512, 3 layers, first dense of
// width 192, 1 shared + 8 routed experts of width 32, top-2, seq 64):
//   attention 16,384 + norms 128; dense FFN 36,864; one expert 6,144
//   MoE FFN active: router 512 + shared 6,144 + 2 x 6,144 = 18,944
//   53,376 + 2 x 35,456 + final norm 64 + head 32,768 = 157,120 active
//   FLOP/token = 6 x 157,120 + 12 x 3 x 64 x 64 = 942,720 + 147,456
TEST(Flops, TinyByHand) {
  const Config c = load_config(kBenchTiny);
  EXPECT_EQ(active_parameters(c.model, c.moe), 157120);
  EXPECT_EQ(train_flops_per_token(c.model, c.moe), 1090176);
  EXPECT_EQ(total_parameters(c.model, c.moe), 157120 + 32768 + 2 * 6 * 6144);
}

// The total is what the model really registers, for layouts with and
// without shared experts and dense layers.
TEST(Flops, TotalMatchesTheModel) {
  for (const char* set : {"moe.n_shared=1", "moe.n_shared=0", "model.first_dense_layers=0",
                          "model.first_dense_layers=3"}) {
    SCOPED_TRACE(set);
    const Config c = load_config(kBenchTiny, {set, "train.micro_batch=1", "train.global_batch=1"});
    auto be = make_cpu_backend<float>(1);
    Transformer<float> model(c, *be, 1);
    EXPECT_EQ(int64_t(model.params().size()), total_parameters(c.model, c.moe));
  }
}

// metrics.jsonl's mfu: null without a peak, else FLOPs/token x tokens/s / peak.
TEST(Flops, MetricsLogMfu) {
  const fs::path dir = fs::temp_directory_path() / ("moe_mfu_" + std::to_string(getpid()));
  fs::remove_all(dir);
  Config c = load_config(kBenchTiny);
  c.log.out_dir = dir.string();
  c.log.expert_load_interval = 0;
  StepStats s;
  s.step = 1;
  s.tokens_per_second = 2500;
  s.counts.assign(size_t(c.model.moe_layers()) * c.moe.n_routed, 0);
  s.maxvio_batch_layers.assign(size_t(c.model.moe_layers()), 0.0);
  {
    MetricsLog log(c, "");
    log.record(s, 1.0, 1);
    log.set_peak_flops(4e12);
    s.step = 2;
    log.record(s, 2.0, 2);
  }
  std::ifstream f(dir / "metrics.jsonl");
  std::string line;
  std::getline(f, line);
  EXPECT_TRUE(nlohmann::json::parse(line)["mfu"].is_null());
  std::getline(f, line);
  // MetricsLog's own expression (flops * tokens/s / peak) and JSON round-trips
  // doubles: equal (DOUBLE_EQ's 4 ulps are slack).
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(line)["mfu"].get<double>(), 1090176.0 * 2500 / 4e12);
  fs::remove_all(dir);
}

TEST(DeviceInfo, PeakTable) {
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA H100 80GB HBM3"), 989.4);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA H100 PCIe"), 756);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA H800"), 989.4);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA H200"), 989.4);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA GH200 480GB"), 989.4);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA A100-SXM4-80GB"), 312);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA A100 80GB PCIe"), 312);
  EXPECT_DOUBLE_EQ(peak_bf16_dense_tflops("NVIDIA L40S"), 362);
  EXPECT_EQ(peak_bf16_dense_tflops("NVIDIA L40"), 0);
  EXPECT_EQ(peak_bf16_dense_tflops("NVIDIA H100 NVL"), 0);
  EXPECT_EQ(peak_bf16_dense_tflops("Tesla V100-SXM2-16GB"), 0);
}

// ------------------------------------------------------------ phase timing

Config small_moe_config() {
  return load_config(kBenchTiny, {"train.micro_batch=4", "train.global_batch=8"});
}

double sum_of(const PhaseSeconds& s) {
  double t = 0;
  for (double x : s) t += x;
  return t;
}

TEST(PhaseTiming, StepPhasesAreChargedWithinTheStep) {
  const Config c = small_moe_config();
  auto be = make_cpu_backend<float>(2);
  LocalComm world;
  const auto data = make_train_source(c);
  Trainer<float> trainer(c, *be, world, *data);
  trainer.train_step(0);
  be->set_phase_timing(true);
  const auto t0 = std::chrono::steady_clock::now();
  be->take_phase_seconds();
  const StepStats st = trainer.train_step(1);
  const PhaseSeconds ph = be->take_phase_seconds();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  for (Phase p : {Phase::Attention, Phase::ExpertGemm, Phase::Dispatch, Phase::Router,
                  Phase::Optimizer, Phase::Other})
    EXPECT_GT(ph[int(p)], 0.0) << phase_name(p);
  EXPECT_LE(sum_of(ph), wall);
  EXPECT_LE(sum_of(ph) - ph[int(Phase::Other)], st.step_seconds);
  EXPECT_EQ(be->current_phase(), Phase::Other);  // every scope closed
  // A take resets: the next one holds only the time since.
  const auto t1 = std::chrono::steady_clock::now();
  be->take_phase_seconds();
  const PhaseSeconds again = be->take_phase_seconds();
  EXPECT_LE(sum_of(again),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
}

TEST(PhaseTiming, OffMeansAllZero) {
  const Config c = small_moe_config();
  auto be = make_cpu_backend<float>(2);
  LocalComm world;
  const auto data = make_train_source(c);
  Trainer<float> trainer(c, *be, world, *data);
  EXPECT_FALSE(be->phase_timing());
  trainer.train_step(0);
  for (double s : be->take_phase_seconds()) EXPECT_EQ(s, 0.0);
  // Turning it on and off again drops what was pending.
  be->set_phase_timing(true);
  trainer.train_step(1);
  be->set_phase_timing(false);
  for (double s : be->take_phase_seconds()) EXPECT_EQ(s, 0.0);
}

// Timing is instrumentation only: the same steps give bit-identical losses.
TEST(PhaseTiming, ChangesNoResult) {
  const Config c = small_moe_config();
  LocalComm world;
  const auto data = make_train_source(c);
  std::vector<double> losses[2];
  for (int timed = 0; timed < 2; ++timed) {
    auto be = make_cpu_backend<float>(2);
    be->set_phase_timing(timed == 1);
    Trainer<float> trainer(c, *be, world, *data);
    for (int s = 0; s < 3; ++s) losses[timed].push_back(trainer.train_step(s).loss);
  }
  EXPECT_EQ(losses[0], losses[1]);
}

TEST(PhaseTiming, ScopesNestAndRestore) {
  auto be = make_cpu_backend<float>(1);
  be->set_phase_timing(true);
  EXPECT_EQ(be->current_phase(), Phase::Other);
  {
    PhaseScope outer(*be, Phase::Router);
    EXPECT_EQ(be->current_phase(), Phase::Router);
    {
      PhaseScope inner(*be, Phase::Dispatch);
      EXPECT_EQ(be->current_phase(), Phase::Dispatch);
      {
        PhaseScope same(*be, Phase::Dispatch);
        EXPECT_EQ(be->current_phase(), Phase::Dispatch);
      }
      EXPECT_EQ(be->current_phase(), Phase::Dispatch);
    }
    EXPECT_EQ(be->current_phase(), Phase::Router);
  }
  EXPECT_EQ(be->current_phase(), Phase::Other);
  const PhaseSeconds ph = be->take_phase_seconds();
  EXPECT_GT(ph[int(Phase::Other)], 0.0);
  EXPECT_EQ(ph[int(Phase::Attention)], 0.0);  // never entered
}

TEST(PhaseTiming, Names) {
  EXPECT_STREQ(phase_name(Phase::Attention), "attention");
  EXPECT_STREQ(phase_name(Phase::ExpertGemm), "expert_gemm");
  EXPECT_STREQ(phase_name(Phase::Dispatch), "dispatch");
  EXPECT_STREQ(phase_name(Phase::Router), "router");
  EXPECT_STREQ(phase_name(Phase::Optimizer), "optimizer");
  EXPECT_STREQ(phase_name(Phase::Other), "other");
}

// ------------------------------------------------------------ memory

TEST(MemoryAccounting, CpuBackendCountsAllocations) {
  auto be = make_cpu_backend<float>(1);
  EXPECT_EQ(be->current_bytes(), 0u);
  void* a = be->alloc_bytes(1000);
  void* b = be->alloc_bytes(24);
  EXPECT_EQ(be->current_bytes(), 1024u);
  be->free_bytes(a);
  EXPECT_EQ(be->current_bytes(), 24u);
  EXPECT_EQ(be->peak_bytes(), 1024u);
  be->free_bytes(b);
  be->free_bytes(nullptr);  // unknown pointer: counts nothing
  EXPECT_EQ(be->current_bytes(), 0u);

  const Config c = small_moe_config();
  {
    Transformer<float> model(c, *be, c.train.micro_batch);
    // At least the parameters, gradients and both AdamW moments.
    EXPECT_GE(be->current_bytes(), 4 * model.params().size() * sizeof(float));
    EXPECT_GE(be->peak_bytes(), be->current_bytes());
  }
  EXPECT_EQ(be->current_bytes(), 0u);
  EXPECT_GT(be->peak_bytes(), 1024u);
  be->reset_peak_bytes();
  EXPECT_EQ(be->peak_bytes(), 0u);
}

// ------------------------------------------------------------ moe-bench

using moe::test::CommandResult;
using moe::test::expect_one_line_error;

CommandResult bench(const std::string& args) {
  return moe::test::run_command(std::string(MOE_BINARY_DIR) + "/moe-bench " + args);
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("moe_bench_" + name + "_" + std::to_string(getpid()));
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

TEST(BenchCli, ExpectPrintsTheModelWithoutRunning) {
  const CommandResult r = bench("--config " + std::string(MOE_SOURCE_DIR) +
                                "/configs/bench/1b.yaml --expect h100");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"H100 SXM", "attention", "expert_gemm", "optimizer", "expected ms",
                        "tokens/s"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in:\n" << r.out;
  expect_one_line_error(bench("--config " + kBenchTiny + " --expect b200"), "--expect");
}

TEST(BenchCli, TinyRunWritesConsistentJson) {
  const fs::path out = temp_path("run.json");
  const CommandResult r =
      bench("--config " + kBenchTiny + " --backend cpu --steps 2 --warmup 1 --json " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"tokens/s", "step time", "MFU          n/a", "attention", "expert_gemm"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in:\n" << r.out;
  const nlohmann::json j = read_json(out);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(j["tokens_per_step"].get<int64_t>(), 16 * 64);
  EXPECT_EQ(j["steps"].get<int>(), 2);
  EXPECT_EQ(j["flops_per_token"].get<int64_t>(), 1090176);
  EXPECT_TRUE(j["mfu"].is_null());
  EXPECT_TRUE(j["peak_tflops"].is_null());
  // The CPU's own denominator: a measured sgemm peak, and the step's share of it.
  const nlohmann::json& gp = j["cpu_gemm_peak"];
  EXPECT_GT(gp["gflops"].get<double>(), 0);
  EXPECT_EQ(gp["routine"].get<std::string>(), "sgemm");
  EXPECT_EQ(gp["n"].get<int>(), 1024);
  EXPECT_EQ(j["device"].get<std::string>(),  // the run's thread count
            "cpu, " + std::to_string(gp["threads"].get<int>()) + " threads");
  EXPECT_GE(gp["calls"].get<int>(), 3);
  // moe-bench's expression on the same doubles (JSON round-trips them): a
  // few ulps at most; 1e-9 relative is slack, the check is the formula.
  const double share = j["flops_per_token"].get<double>() * j["tokens_per_s"].get<double>() /
                       (gp["gflops"].get<double>() * 1e9);
  EXPECT_NEAR(j["cpu_gemm_mfu"].get<double>(), share, 1e-12 + 1e-9 * share);
  for (const char* s : {"gemm peak", "GFLOP/s (", "sgemm 1024^3", "of the measured CPU GEMM peak"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in:\n" << r.out;
  EXPECT_GT(j["peak_bytes"].get<double>(), 0);
  // The plan is what the run allocated: on the CPU every backend byte is the model's.
  EXPECT_EQ(j["plan"]["bytes"]["total"].get<int64_t>(), j["peak_bytes"].get<int64_t>());
  EXPECT_NE(r.out.find("memory plan"), std::string::npos) << r.out;
  EXPECT_TRUE(j["device_used_bytes"].is_null());  // no device on the CPU
  EXPECT_EQ(r.out.find("device in use"), std::string::npos) << r.out;
  EXPECT_EQ(j["skipped_steps"].get<int>(), 0);
  EXPECT_EQ(r.out.find("warning"), std::string::npos) << r.out;
  const double step = j["step_s_mean"].get<double>();
  // The same quotient, of a step time that went through JSON:
  EXPECT_NEAR(j["tokens_per_s"].get<double>(), 16 * 64 / step, 1e-6 * 16 * 64 / step);
  EXPECT_LE(j["step_s_min"].get<double>(), step);
  double named = 0, all = 0;
  for (auto& [name, ph] : j["phases"].items()) {
    const double s = ph["s_per_step"].get<double>();
    EXPECT_GE(s, 0) << name;
    all += s;
    if (name != "other") {
      named += s;
      EXPECT_GT(s, 0) << name;  // an MoE model touches every phase
    }
  }
  EXPECT_EQ(j["phases"].size(), 6u);
  EXPECT_LE(named, step);
  // other = step - named, so the six shares add up to step up to ~6 ulps.
  EXPECT_NEAR(all, step, 1e-9 + 1e-6 * step);
  fs::remove(out);
}

TEST(BenchCli, MfuFromGivenPeak) {
  const fs::path out = temp_path("mfu.json");
  const CommandResult r = bench("--config " + kBenchTiny +
                                " --backend cpu --steps 1 --warmup 0 --peak-tflops 0.5 --json " +
                                out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = read_json(out);
  ASSERT_FALSE(j["mfu"].is_null());
  EXPECT_DOUBLE_EQ(j["peak_tflops"].get<double>(), 0.5);
  // moe-bench divides by 0.5 * 1e12 = 0.5e12 exactly: a few ulps at most.
  const double want =
      j["flops_per_token"].get<double>() * j["tokens_per_s"].get<double>() / 0.5e12;
  EXPECT_NEAR(j["mfu"].get<double>(), want, 1e-12 + 1e-9 * want);
  fs::remove(out);
}

// fp64 runs measure the peak of the GEMM they use: dgemm.
TEST(BenchCli, CpuGemmPeakFollowsPrecision) {
  const fs::path out = temp_path("fp64.json");
  const CommandResult r = bench("--config " + kBenchTiny +
                                " --set train.backend=cpu --set train.precision=float64"
                                " --steps 1 --warmup 0 --json " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("dgemm 1024^3"), std::string::npos) << r.out;
  const nlohmann::json j = read_json(out);
  EXPECT_EQ(j["cpu_gemm_peak"]["routine"].get<std::string>(), "dgemm");
  EXPECT_GT(j["cpu_gemm_mfu"].get<double>(), 0);
  fs::remove(out);
}

// A step that applies no update is not a training step: with every timed
// step non-finite moe-bench has measured nothing, so it says so in one line
// and exits 1, and leaves no results file. The real way there: an absurd LR
// makes the warm-up step's update blow the weights up, and every later loss
// is then non-finite (skipped steps change nothing, so it stays that way).
TEST(BenchCli, EveryTimedStepNonFiniteExitsOne) {
  const fs::path out = temp_path("nonfinite.json");
  const CommandResult r = bench("--config " + kBenchTiny +
                                " --backend cpu --set train.lr=1e30 --steps 2 --warmup 1 --json " +
                                out.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("moe-bench: error: all 2 timed steps had a non-finite loss or gradient "
                       "norm and were skipped"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("tokens/s"), std::string::npos) << r.out;  // no numbers to report
  EXPECT_FALSE(fs::exists(out));

  // Without the warm-up the first timed step is still finite: 1 of 2 skipped
  // is a measurement, with the count reported in the table and the JSON.
  const CommandResult part = bench("--config " + kBenchTiny +
                                   " --backend cpu --set train.lr=1e30 --steps 2 --warmup 0 "
                                   "--json " + out.string());
  ASSERT_EQ(part.code, 0) << part.out;
  EXPECT_NE(part.out.find("warning: 1 of the 2 timed steps had a non-finite loss or gradient "
                          "norm (skipped: no update)"),
            std::string::npos)
      << part.out;
  EXPECT_EQ(read_json(out)["skipped_steps"].get<int>(), 1);
  fs::remove(out);
}

TEST(BenchCli, BadInput) {
  expect_one_line_error(bench(""), "--config");
  expect_one_line_error(bench("--config " + kBenchTiny + " --steps 0"), "--steps");
  expect_one_line_error(bench("--config " + kBenchTiny + " --steps x"), "--steps");
  expect_one_line_error(bench("--config " + kBenchTiny + " --warmup -1"), "--warmup");
  expect_one_line_error(bench("--config " + kBenchTiny + " --backend tpu"), "--backend");
  expect_one_line_error(bench("--config " + kBenchTiny + " --peak-tflops 0"), "--peak-tflops");
  expect_one_line_error(bench("--config " + kBenchTiny + " --bogus 1"), "--bogus");
  expect_one_line_error(bench("--config " + kBenchTiny + " --set moe.top_k=9"), "moe.top_k");
  expect_one_line_error(bench("--config /nonexistent/b.yaml"), "/nonexistent/b.yaml");
  expect_one_line_error(
      bench("--config " + kBenchTiny + " --backend cpu --json /nonexistent/dir/x.json"),
      "/nonexistent/dir/x.json");
}

// moe-bench --op attention (plan/bench_attention.h): the FLOP convention by
// hand, and its errors. Timing itself needs a GPU: test_gpu_attention_tc.
TEST(BenchAttention, FlopConventionByHand) {
  // The 1B preset's micro-batch: 4 x B 8 x H 8 x S 2048^2 x hd 128 / 2.
  // Integer values below 2^53 (and x 2.5): exact in double.
  EXPECT_DOUBLE_EQ(attention_forward_flops(8, 2048, 8, 128), 68719476736.0);
  EXPECT_DOUBLE_EQ(attention_backward_flops(8, 2048, 8, 128), 2.5 * 68719476736.0);
  EXPECT_DOUBLE_EQ(attention_forward_flops(1, 1, 1, 64), 128.0);  // 4 x 64 / 2
}

TEST(BenchCli, AttentionOpErrors) {
  const std::string b1 = std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml";
  expect_one_line_error(bench("--config " + b1 + " --op matmul"), "--op");
  expect_one_line_error(bench("--config " + b1 + " --op attention --backend cpu"),
                        "--op attention");
  if (!cuda_available()) {
    // A CPU-only build or no device: one line naming CUDA, exit 2.
    expect_one_line_error(bench("--config " + b1 + " --op attention"), "CUDA");
  } else {
    // tiny.yaml's head_dim is 16: not a tensor-core shape.
    expect_one_line_error(bench("--config " + kBenchTiny + " --op attention"), "head_dim 16");
  }
}

}  // namespace
