// moe-bench: training throughput of a config on synthetic tokens (issue 6):
// tokens/s, step time, MFU, peak memory and the time per phase of a step.
//   moe-bench --config configs/bench/1b.yaml [--steps N] [--warmup N] [--json FILE]
// Runs the real Trainer::train_step on one rank; no checkpoints, metrics
// files or evaluation. docs/bench.md explains every number.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/common.h"
#include "backend/backend.h"
#include "comm/comm.h"
#include "data/token_source.h"
#include "model/flops.h"
#include "plan/bench_attention.h"
#include "plan/cpu_gemm_peak.h"
#include "plan/memory_check.h"
#include "plan/memory_plan.h"
#include "plan/perf_model.h"
#include "runtime/backend_choice.h"
#include "runtime/device_info.h"
#include "train/trainer.h"

namespace {

struct Args {
  std::string config_path, backend, json_path, expect, op;
  std::vector<std::string> overrides;
  int64_t steps = 10, warmup = 2;
  bool force = false;  // run even when the memory plan exceeds what is available
  std::optional<double> peak_tflops;
};

// --backend wins over the config's train.backend; then the rules every
// program shares (runtime/backend_choice.h).
moe::BackendKind choose_backend(const Args& a, moe::Config& cfg) {
  if (a.backend == "cpu") cfg.train.backend = moe::BackendKind::Cpu;
  if (a.backend == "cuda") cfg.train.backend = moe::BackendKind::Cuda;
  return moe::resolve_backend(cfg);
}

struct Measurement {
  std::vector<double> step_s;
  moe::PhaseSeconds phase_s{};  // summed over the timed steps
  int64_t skipped = 0;
  size_t peak_bytes = 0;
  size_t device_used_bytes = 0;  // with CUDA: taken while the model still holds its memory
};

template <typename T, typename A>
Measurement measure(const moe::Config& cfg, moe::Backend<T, A>& be, const Args& a, bool on_gpu) {
  moe::LocalComm world;
  const std::unique_ptr<moe::TokenSource> data = moe::make_train_source(cfg);
  moe::Trainer<T, A> trainer(cfg, be, world, *data);
  for (int64_t s = 0; s < a.warmup; ++s) trainer.train_step(s);
  Measurement m;
  be.set_phase_timing(true);
  for (int64_t s = a.warmup; s < a.warmup + a.steps; ++s) {
    be.take_phase_seconds();  // drop the time between steps
    const moe::StepStats st = trainer.train_step(s);
    const moe::PhaseSeconds ph = be.take_phase_seconds();
    for (int p = 0; p < moe::kPhaseCount; ++p) m.phase_s[p] += ph[p];
    m.step_s.push_back(st.step_seconds);
    m.skipped += st.skipped ? 1 : 0;
  }
  be.set_phase_timing(false);
  m.peak_bytes = be.peak_bytes();
  // Here, not after measure returns: the trainer and its model are alive, so
  // "device in use" holds their memory (train_step ended synchronized).
  if (on_gpu) m.device_used_bytes = moe::gpu_info(0).used_bytes;
  return m;
}

std::string mib(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1024.0 * 1024.0));
  return buf;
}

// The expected-time table of one step of cfg on dev (moe-bench --expect).
int print_expectation(const moe::Config& cfg, const moe::DeviceSpec& dev) {
  const moe::StepExpectation x = moe::expected_step(cfg, dev);
  const moe::Efficiency eff;
  const double tokens = double(cfg.train.global_batch) * cfg.model.seq_len;
  double total = 0;
  for (const auto& p : x) total += p.seconds;
  std::printf("expected step: %s on %s (%.1f TFLOP/s bf16, %.1f fp32, %.2f TB/s)\n",
              cfg.model.moe_layers() > 0 ? "MoE transformer" : "transformer", dev.name.c_str(),
              dev.bf16_tflops, dev.fp32_tflops, dev.dram_tbps);
  std::printf("  efficiencies: GEMM %.0f%%, attention %.0f%%, fp32 GEMM %.0f%%, memory %.0f%%\n",
              eff.gemm * 100, eff.attention * 100, eff.fp32_gemm * 100, eff.memory * 100);
  std::printf("  %.0f tokens per step\n\n", tokens);
  std::printf("  phase        matmul TFLOP  attn TFLOP  fp32 TFLOP    DRAM GB   expected ms\n");
  for (int p = 0; p < moe::kPhaseCount; ++p)
    std::printf("  %-12s %12.2f %11.2f %11.3f %10.1f %13.2f\n", moe::phase_name(moe::Phase(p)),
                x[p].matmul_flops / 1e12, x[p].attention_flops / 1e12, x[p].fp32_flops / 1e12,
                x[p].bytes / 1e9, x[p].seconds * 1e3);
  std::printf("  %-12s %60.2f\n", "step", total * 1e3);
  std::printf("  tokens/s     %.0f expected\n", tokens / total);
  return 0;
}

int bench(const Args& a) {
  std::vector<std::string> overrides = a.overrides;
  overrides.push_back("data.source=synthetic");
  overrides.push_back("train.steps=" + std::to_string(a.warmup + a.steps));
  moe::Config cfg = moe::load_config(a.config_path, overrides, 1);
  moe::setup_logging(cfg.log.level);
  if (!a.expect.empty()) {
    const auto dev = moe::device_spec_by_key(a.expect);
    if (!dev) throw moe::InputError("--expect: expected h100, h100-pcie, h200 or a100, got '" +
                                    a.expect + "'");
    return print_expectation(cfg, *dev);
  }
  const moe::BackendKind kind = choose_backend(a, cfg);
  if (cfg.train.threads == 0) cfg.train.threads = omp_get_num_procs();
  moe::check_training_memory(cfg, kind, 1, 0, 0, 1, a.force);  // before any allocation
  // Opened before measuring: a bad path fails before minutes of it.
  std::ofstream json_out;
  if (!a.json_path.empty()) {
    json_out.open(a.json_path);
    if (!json_out) throw moe::InputError("--json: cannot write " + a.json_path);
  }

  std::optional<moe::GpuInfo> gpu;
  std::optional<moe::CpuGemmPeak> cpu_peak;
  std::string device;
  Measurement m;
  std::string backend_name;
  if (kind == moe::BackendKind::Cuda) {
    gpu = moe::gpu_info(0);
    device = gpu->name;
    std::printf("note: %s\n", moe::backend_caveat(kind).c_str());
  } else {
    device = "cpu, " + std::to_string(cfg.train.threads) + " threads";
    // Before the run, on the run's thread count: the denominator of the
    // CPU's share of its GEMM peak (bf16 mode computes in fp32: sgemm).
    cpu_peak = moe::measure_cpu_gemm_peak(cfg.train.precision == moe::Precision::Float64,
                                          cfg.train.threads);
  }
  moe::with_element_types(cfg, [&]<typename T, typename A>() {
    auto be = moe::make_backend<T, A>(cfg, kind, 0);
    backend_name = be->name();
    m = measure<T, A>(cfg, *be, a, gpu.has_value());
  });
  if (gpu) gpu->used_bytes = m.device_used_bytes;

  // A step that applies no update times a shorter step than training runs:
  // with none applied there is nothing to report.
  if (m.skipped == int64_t(m.step_s.size())) {
    if (json_out.is_open()) {  // no results: leave no empty results file
      json_out.close();
      std::filesystem::remove(a.json_path);
    }
    std::fprintf(stderr,
                 "moe-bench: error: all %lld timed steps had a non-finite loss or gradient norm "
                 "and were skipped (no update), so nothing was measured; check the config "
                 "(train.lr, model.init_std)\n",
                 (long long)m.skipped);
    return 1;
  }

  // ---- numbers ----
  const moe::MemoryPlan plan = moe::plan_memory(cfg, kind, 1);
  const moe::ModelConfig& mc = cfg.model;
  const int64_t tokens_per_step = int64_t(cfg.train.global_batch) * mc.seq_len;
  double total_s = 0, min_s = m.step_s.front();
  for (double s : m.step_s) total_s += s, min_s = std::min(min_s, s);
  const double mean_s = total_s / double(m.step_s.size());
  const double tokens_per_s = double(tokens_per_step) / mean_s;
  const int64_t flops_per_token = moe::train_flops_per_token(mc, cfg.moe);
  std::optional<double> peak = a.peak_tflops;
  if (!peak && gpu && gpu->peak_bf16_tflops > 0) peak = gpu->peak_bf16_tflops;
  const double achieved_flops = double(flops_per_token) * tokens_per_s;
  std::optional<double> mfu;
  if (peak) mfu = achieved_flops / (*peak * 1e12);
  std::optional<double> gemm_share;  // of the measured CPU GEMM peak
  if (cpu_peak) gemm_share = achieved_flops / (cpu_peak->gflops * 1e9);

  // Per step; `other` is what the named phases leave of the step time.
  moe::PhaseSeconds per_step{};
  double named = 0;
  for (int p = 0; p < moe::kPhaseCount; ++p) {
    if (moe::Phase(p) == moe::Phase::Other) continue;
    per_step[p] = m.phase_s[p] / double(m.step_s.size());
    named += per_step[p];
  }
  per_step[int(moe::Phase::Other)] = std::max(0.0, mean_s - named);

  // ---- table ----
  std::printf("moe-bench: %s\n", a.config_path.c_str());
  std::printf("  backend      %s (%s)\n", backend_name.c_str(), device.c_str());
  std::printf("  model        %d layers (%d MoE), hidden %d, %d shared + %d routed experts, "
              "top-%d, seq %d\n",
              mc.layers, mc.moe_layers(), mc.hidden, cfg.moe.n_shared, cfg.moe.n_routed,
              cfg.moe.top_k, mc.seq_len);
  std::printf("  parameters   %.2fM total, %.2fM active per token; %.3g training FLOP/token\n",
              double(moe::total_parameters(mc, cfg.moe)) / 1e6,
              double(moe::active_parameters(mc, cfg.moe)) / 1e6, double(flops_per_token));
  std::printf("  batch        %d x %d = %lld tokens per step (micro-batch %d)\n",
              cfg.train.global_batch, mc.seq_len, (long long)tokens_per_step,
              cfg.train.micro_batch);
  std::printf("  steps        %lld warm-up + %lld timed\n\n", (long long)a.warmup,
              (long long)a.steps);
  std::printf("  tokens/s     %.0f\n", tokens_per_s);
  std::printf("  step time    %.2f ms mean, %.2f ms min\n", mean_s * 1e3, min_s * 1e3);
  if (mfu)
    std::printf("  MFU          %.2f%% of %.1f TFLOP/s (%.1f TFLOP/s achieved)\n", *mfu * 100,
                *peak, double(flops_per_token) * tokens_per_s / 1e12);
  else
    std::printf("  MFU          n/a (pass --peak-tflops)\n");
  if (cpu_peak) {
    std::printf("  gemm peak    %.1f GFLOP/s (%s %s %d^3, %d threads)\n", cpu_peak->gflops,
                cpu_peak->library.c_str(), cpu_peak->routine.c_str(), cpu_peak->n,
                cpu_peak->threads);
    std::printf("  gemm MFU     %.1f%% of the measured CPU GEMM peak (%.2f GFLOP/s achieved)\n",
                *gemm_share * 100, achieved_flops / 1e9);
  }
  if (m.peak_bytes > 0)
    std::printf("  peak memory  %s (backend allocations)", mib(m.peak_bytes).c_str());
  else
    std::printf("  peak memory  not counted by this backend");
  if (gpu) std::printf("; device in use %s of %s", mib(gpu->used_bytes).c_str(),
                       mib(gpu->total_bytes).c_str());
  std::printf("\n  memory plan  %s (moe-train --plan: model %s, backend workspace %s)",
              mib(plan.total()).c_str(), mib(plan.total() - plan.workspace).c_str(),
              mib(plan.workspace).c_str());
  // On a GPU of the expected-time table: the model's time per phase beside
  // the measured one (docs/bench.md, "Expected time").
  std::optional<moe::StepExpectation> expected;
  if (gpu)
    if (const auto dev = moe::device_spec(gpu->name)) expected = moe::expected_step(cfg, *dev);
  std::printf("\n\n  phase          ms/step   share%s\n", expected ? "   expected ms" : "");
  double expected_step_s = 0;
  for (int p = 0; p < moe::kPhaseCount; ++p) {
    std::printf("  %-12s %9.2f  %5.1f%%", moe::phase_name(moe::Phase(p)), per_step[p] * 1e3,
                100.0 * per_step[p] / mean_s);
    if (expected) {
      std::printf("  %12.2f", (*expected)[p].seconds * 1e3);
      expected_step_s += (*expected)[p].seconds;
    }
    std::printf("\n");
  }
  if (expected)
    std::printf("  expected     %9.2f ms/step, %.0f tokens/s (moe-bench --expect)\n",
                expected_step_s * 1e3, double(tokens_per_step) / expected_step_s);
  if (m.skipped > 0)
    std::printf("warning: %lld of the %lld timed steps had a non-finite loss or gradient norm "
                "(skipped: no update)\n",
                (long long)m.skipped, (long long)m.step_s.size());
  std::fflush(stdout);

  // ---- JSON ----
  if (!a.json_path.empty()) {
    nlohmann::json j;
    j["config"] = a.config_path;
    j["backend"] = backend_name;
    j["device"] = device;
    j["warmup_steps"] = a.warmup;
    j["steps"] = a.steps;
    j["tokens_per_step"] = tokens_per_step;
    j["tokens_per_s"] = tokens_per_s;
    j["step_s_mean"] = mean_s;
    j["step_s_min"] = min_s;
    j["total_parameters"] = moe::total_parameters(mc, cfg.moe);
    j["active_parameters"] = moe::active_parameters(mc, cfg.moe);
    j["flops_per_token"] = flops_per_token;
    j["peak_tflops"] = peak ? nlohmann::json(*peak) : nlohmann::json(nullptr);
    j["mfu"] = mfu ? nlohmann::json(*mfu) : nlohmann::json(nullptr);
    j["cpu_gemm_peak"] = nullptr;
    if (cpu_peak)
      j["cpu_gemm_peak"] = {{"gflops", cpu_peak->gflops}, {"library", cpu_peak->library},
                            {"routine", cpu_peak->routine}, {"n", cpu_peak->n},
                            {"threads", cpu_peak->threads}, {"calls", cpu_peak->calls}};
    j["cpu_gemm_mfu"] = gemm_share ? nlohmann::json(*gemm_share) : nlohmann::json(nullptr);
    j["peak_bytes"] = m.peak_bytes > 0 ? nlohmann::json(m.peak_bytes) : nlohmann::json(nullptr);
    j["device_used_bytes"] = gpu ? nlohmann::json(gpu->used_bytes) : nlohmann::json(nullptr);
    j["plan"] = moe::plan_to_json(plan);
    j["skipped_steps"] = m.skipped;
    for (int p = 0; p < moe::kPhaseCount; ++p) {
      j["phases"][moe::phase_name(moe::Phase(p))] = {{"s_per_step", per_step[p]},
                                                     {"share", per_step[p] / mean_s}};
      if (expected)
        j["phases"][moe::phase_name(moe::Phase(p))]["expected_s_per_step"] = (*expected)[p].seconds;
    }
    j["expected_step_s"] = expected ? nlohmann::json(expected_step_s) : nlohmann::json(nullptr);
    json_out << j.dump(2) << "\n";
    json_out.close();
    if (!json_out) throw moe::InputError("--json: cannot write " + a.json_path);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::ensure_passive_thread_waits(argv);
  return moe::run_main("moe-bench", [&]() {
    Args a;
    double peak_tflops = 0;
    CLI::App app{"Training throughput of a config on synthetic tokens: tokens/s, step time, MFU, "
                 "peak memory and the time per phase of a step (docs/bench.md)."};
    moe::cli::configure(app, "moe-bench");
    app.add_option("--config", a.config_path,
                   "model and batch to measure (YAML; data.* is replaced by synthetic tokens)")
        ->type_name("FILE")
        ->required();
    app.add_option("--set", a.overrides,
                   "override one config key, e.g. --set train.micro_batch=8 (repeatable)")
        ->type_name("KEY=VALUE")
        ->allow_extra_args(false);
    app.add_option("--steps", a.steps, "timed steps (default 10)")
        ->type_name("N")
        ->check(moe::cli::integer_at_least(1));
    app.add_option("--warmup", a.warmup, "untimed steps first (default 2)")
        ->type_name("N")
        ->check(moe::cli::integer_at_least(0));
    app.add_option("--backend", a.backend,
                   "cpu or cuda (default: train.backend of the config; auto = cuda when this "
                   "build has CUDA and a device is visible, else cpu)")
        ->type_name("B")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_option("--peak-tflops", peak_tflops,
                   "the device's dense peak in TFLOP/s for MFU (default: the bf16 table of "
                   "docs/bench.md on a known GPU; none on the CPU, which also reports its share "
                   "of a GEMM peak it measures, \"gemm MFU\")")
        ->type_name("X")
        ->check(moe::cli::positive_number());
    app.add_option("--json", a.json_path, "also write the results as JSON")->type_name("FILE");
    app.add_flag("--force", a.force,
                 "run even when the memory plan exceeds the memory available (MemAvailable and "
                 "the cgroup limit, or the GPU's free memory), with a warning");
    app.add_option("--op", a.op,
                   "attention: time only the tensor-core attention kernels (forward, backward) "
                   "at train.micro_batch x model.seq_len x model.heads x head_dim, on CUDA; "
                   "--warmup / --steps calls each; TFLOP/s and % of the bf16 peak")
        ->type_name("OP")
        ->check(CLI::IsMember({"attention"}));
    app.add_option("--expect", a.expect,
                   "print the expected time of a step, phase by phase, on that GPU "
                   "(docs/bench.md, \"Expected time\") and exit; runs nothing. On a known GPU a "
                   "run prints its expectation beside what it measured")
        ->type_name("h100|h100-pcie|h200|a100");
    if (!moe::cli::parse(app, argc, argv)) return 0;
    if (app.count("--peak-tflops") > 0) a.peak_tflops = peak_tflops;
    if (a.op == "attention") {  // plan/bench_attention.h
      if (a.backend == "cpu")
        throw moe::InputError("--op attention runs on CUDA, not --backend cpu");
      return moe::run_attention_bench(moe::load_config(a.config_path, a.overrides, 1),
                                      a.config_path, a.warmup, a.steps, a.peak_tflops,
                                      a.json_path);
    }
    return bench(a);
  });
}
