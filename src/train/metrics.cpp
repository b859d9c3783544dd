#include "train/metrics.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/keep_aside.h"
#include "eval/evaluator.h"
#include "model/flops.h"

namespace moe {

namespace fs = std::filesystem;

namespace {

// An earlier run's file moved out of a fresh run's way, and said so.
void set_aside(const fs::path& p) {
  if (const std::string q = keep_aside(p.string()); !q.empty())
    spdlog::info("kept the previous {} as {}", p.filename().string(), fs::path(q).filename().string());
}

std::ofstream open_log(const fs::path& p, bool append) {
  if (!append) set_aside(p);
  std::ofstream f(p, append ? std::ios::app : std::ios::trunc);
  if (!f) throw InputError("log.out_dir: cannot write " + p.string());
  return f;
}

}  // namespace

MetricsLog::MetricsLog(const Config& cfg, const std::string& config_yaml, bool append)
    : cfg_(cfg),
      moe_layers_(cfg.model.moe_layers()),
      E_(cfg.moe.n_routed),
      flops_per_token_(double(train_flops_per_token(cfg.model, cfg.moe))) {
  const fs::path dir(cfg.log.out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("log.out_dir: cannot create " + dir.string() + ": " + ec.message());
  std::ofstream(dir / "config.yaml") << config_yaml;
  metrics_ = open_log(dir / "metrics.jsonl", append);
  if (cfg.log.expert_load_interval > 0) loads_ = open_log(dir / "expert_loads.jsonl", append);
  if (cfg.train.eval_interval > 0) eval_ = open_log(dir / "eval.jsonl", append);
  if (!append) set_aside(dir / "eval.json");  // a new run's result is not yet there
}

void MetricsLog::record(const StepStats& s, double elapsed, int64_t steps_done) {
  using nlohmann::json;
  const int64_t total = cfg_.train.steps;
  json j = {{"step", s.step},
            {"loss", s.loss},
            {"aux_loss", s.aux_loss},
            {"lr", s.lr},
            {"grad_norm", s.grad_norm},
            {"maxvio_batch", s.maxvio_batch},
            {"maxvio_batch_layers", s.maxvio_batch_layers},
            {"maxvio_compute", s.maxvio_compute},
            {"maxvio_compute_layers", s.maxvio_compute_layers},
            {"tokens_per_s", s.tokens_per_second},
            {"mfu", peak_flops_ > 0 ? json(flops_per_token_ * s.tokens_per_second / peak_flops_)
                                    : json(nullptr)},
            {"step_s", s.step_seconds},
            {"tokens_seen", s.tokens_seen},
            {"elapsed_s", elapsed},
            {"skipped", s.skipped}};
  for (const auto& [what, f] : {std::pair{"ranks", s.fanout_ranks}, std::pair{"nodes", s.fanout_nodes}})
    if (f) {
      j[fmt::format("fanout_{}_mean", what)] = f->mean;
      j[fmt::format("fanout_{}_max", what)] = f->max;
    }
  metrics_ << j.dump() << '\n';
  metrics_.flush();

  const int every = cfg_.log.expert_load_interval;
  if (every > 0 && (s.step % every == 0 || s.step == total)) {
    json loads = json::array(), bias = json::array();
    for (int l = 0; l < moe_layers_; ++l) {
      loads.push_back(std::vector<int64_t>(s.counts.begin() + size_t(l) * E_,
                                           s.counts.begin() + size_t(l + 1) * E_));
      bias.push_back(std::vector<float>(s.bias.begin() + size_t(l) * E_,
                                        s.bias.begin() + size_t(l + 1) * E_));
    }
    loads_ << json{{"step", s.step}, {"loads", loads}, {"bias", bias}}.dump() << '\n';
    loads_.flush();
  }

  if (s.step % cfg_.log.interval == 0 || s.step == total || s.step == 1) {
    const double eta = elapsed / double(std::max<int64_t>(1, steps_done)) * double(total - s.step);
    const std::string mfu =
        peak_flops_ > 0
            ? fmt::format(" | mfu {:.1f}%", 100 * flops_per_token_ * s.tokens_per_second / peak_flops_)
            : "";
    spdlog::info(
        "step {:>{}}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.3f} | aux {:.2e} | maxvio {:.3f} | "
        "{:.0f} tok/s{} | ETA {}",
        s.step, int(std::to_string(total).size()), total, s.loss, s.lr, s.grad_norm, s.aux_loss,
        s.maxvio_batch, s.tokens_per_second, mfu, format_duration(eta));
  }
}

void MetricsLog::record_eval(int64_t step, const EvalResult& r) {
  nlohmann::json j = eval_to_json(r);
  j["step"] = step;
  if (eval_.is_open()) {
    eval_ << j.dump() << '\n';
    eval_.flush();
  }
  spdlog::info("eval  step {} | val loss {:.4f} | ppl {:.3f} | MaxVio_global {:.3f} | {} tokens", step,
               r.loss, r.perplexity, r.maxvio_global.mean, r.tokens);
}

void MetricsLog::record_final_eval(const nlohmann::json& report, const EvalResult& r) {
  const fs::path dir(cfg_.log.out_dir), tmp = dir / ".eval.json.tmp";
  {
    std::ofstream f(tmp);
    if (!(f << report.dump(2) << '\n')) throw InputError("log.out_dir: cannot write " + tmp.string());
  }
  fs::rename(tmp, dir / "eval.json");
  spdlog::info("final eval, step {} | val loss {:.4f} | ppl {:.3f} | MaxVio_global {:.4f} | {} tokens "
               "| {}/eval.json",
               report["step"].get<int64_t>(), r.loss, r.perplexity, r.maxvio_global.mean, r.tokens,
               cfg_.log.out_dir);
}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

}  // namespace moe
