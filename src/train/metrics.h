// Run outputs: metrics.jsonl (one JSON object per step), expert_loads.jsonl
// (per-expert token counts every log.expert_load_interval steps, for
// heatmaps) and the resolved config, all under log.out_dir; plus the
// console progress line. Only rank 0 creates a MetricsLog.
#pragma once

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "moe/fanout.h"

namespace moe {

struct StepStats {
  int64_t step = 0;             // 1-based: the number of optimizer steps done
  double loss = 0.0;            // mean token cross-entropy of the global batch
  double aux_loss = 0.0;        // aux-loss term of the objective (0 unless aux_loss or
                                // loss_free with seq_aux_alpha)
  double lr = 0.0;
  double grad_norm = 0.0;       // global norm before clipping
  double maxvio_batch = 0.0;    // mean over MoE layers
  std::vector<double> maxvio_batch_layers;
  // Mean over the step's computation batches (a micro-batch of each rank of
  // an EP group: what one GPU's experts compute), mean over MoE layers.
  double maxvio_compute = 0.0;
  std::vector<double> maxvio_compute_layers;
  // Expert parallelism only: over the global batch's tokens and the MoE
  // layers, the distinct EP ranks (and, across nodes, nodes) a token's
  // routed experts live on.
  std::optional<Fanout> fanout_ranks, fanout_nodes;
  std::vector<int64_t> counts;  // [moe_layers * n_routed], global batch
  std::vector<float> bias;      // [moe_layers * n_routed], Loss-Free bias after the update
  double step_seconds = 0.0;
  double tokens_per_second = 0.0;
  int64_t tokens_seen = 0;
  bool skipped = false;         // non-finite loss or gradient: no update applied
};

struct EvalResult;

class MetricsLog {
 public:
  // Creates out_dir. A fresh run renames an earlier run's files aside (never
  // lost); a resumed run (append) continues them.
  MetricsLog(const Config& cfg, const std::string& config_yaml, bool append = false);
  // elapsed: seconds since this process began training; steps_done: steps
  // this process has run (for the ETA).
  void record(const StepStats& s, double elapsed, int64_t steps_done);
  // One in-training evaluation after `step` steps: eval.jsonl and console.
  void record_eval(int64_t step, const EvalResult& r);
  // The end-of-training evaluation (eval_report): eval.json, written whole
  // under a temporary name then renamed, so its presence means a finished run.
  void record_final_eval(const nlohmann::json& report, const EvalResult& r);
  // The job's dense bf16 peak (FLOP/s, all ranks together): with it each step
  // reports MFU = training FLOPs per token x tokens/s / peak (docs/bench.md);
  // without it (the CPU, an unknown GPU) mfu is null.
  void set_peak_flops(double flops_per_second) { peak_flops_ = flops_per_second; }

 private:
  const Config& cfg_;
  std::ofstream metrics_, loads_, eval_;
  int moe_layers_, E_;
  double flops_per_token_;
  double peak_flops_ = 0;
};

// "1h02m", "3m20s", "12s".
std::string format_duration(double seconds);

}  // namespace moe
