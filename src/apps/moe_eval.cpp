// moe-eval: held-out perplexity and MaxVio_global of a checkpoint.
//   moe-eval --checkpoint DIR [--data VAL] [--max-tokens N] [--batch B] [--output FILE]
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "apps/backend_choice.h"
#include "apps/common.h"
#include "apps/device_info.h"
#include "backend/backend.h"
#include "data/shard_dataset.h"
#include "comm/comm.h"
#include "eval/evaluator.h"
#include "model/transformer.h"
#include "train/checkpoint.h"

namespace {

constexpr const char* kUsage =
    "usage: moe-eval --checkpoint DIR [--data VAL] [--max-tokens N] [--batch B] [--output FILE]\n"
    "  --checkpoint DIR  a checkpoint (step_* directory) or a checkpoint.dir (its newest)\n"
    "  --data VAL        validation shards: a moe-data output directory (its val_*.bin), a glob\n"
    "                    or a shard file; default: the checkpoint config's validation data\n"
    "  --max-tokens N    evaluate only the first whole sequences holding N tokens (default: all)\n"
    "  --batch B         sequences per forward pass (default: train.micro_batch)\n"
    "  --output FILE     result JSON (default: DIR/eval.json)\n"
    "  --threads T       CPU threads (default: all cores)\n"
    "  --backend B       cpu, cuda or auto (default: auto = CUDA when a device is visible; a\n"
    "                    bfloat16 checkpoint evaluates in float32 on the CPU)\n";

template <typename T, typename A>
nlohmann::json evaluate_checkpoint(const moe::Config& cfg, moe::BackendKind kind,
                                   const std::string& ckpt, const moe::ValidationReader& val,
                                   int batch, int64_t max_tokens) {
  auto be = moe::make_backend<T, A>(cfg, kind, 0);
  if (const std::string caveat = moe::backend_caveat(kind); !caveat.empty())
    spdlog::warn("{}", caveat);
  moe::LocalComm comm;
  moe::Transformer<T, A> model(cfg, *be, batch);
  moe::Balancer balancer(cfg.balance, cfg.model.moe_layers(), cfg.moe.n_routed, be.get());
  const moe::TrainerState st =
      moe::load_checkpoint(ckpt, model.params(), balancer, cfg.model.first_dense_layers);
  model.use_router_bias(balancer.device_bias());
  spdlog::info("checkpoint {} (step {}), validation {}", ckpt, st.step, val.describe());
  const moe::EvalResult r = moe::evaluate(model, val, batch, max_tokens, comm);
  nlohmann::json j = moe::eval_report(r, st.step, val.describe(), ckpt);
  spdlog::info("val loss {:.4f} | perplexity {:.3f} | MaxVio_global {:.4f} | {} tokens", r.loss,
               r.perplexity, r.maxvio_global.mean, r.tokens);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  moe::ensure_passive_thread_waits(argv);
  return moe::run_main("moe-eval", [&]() {
    std::string ckpt, data, output;
    std::optional<moe::BackendKind> backend;
    int64_t max_tokens = 0, batch = 0, threads = 0;
    if (!moe::parse_flags(
            argc, argv, "moe-eval", kUsage,
            {{"--checkpoint", [&](const std::string& v) { ckpt = v; }},
             {"--data", [&](const std::string& v) { data = v; }},
             {"--output", [&](const std::string& v) { output = v; }},
             {"--max-tokens", [&](const std::string& v) { max_tokens = moe::parse_count("--max-tokens", v); }},
             {"--batch", [&](const std::string& v) { batch = moe::parse_count("--batch", v); }},
             {"--threads", [&](const std::string& v) { threads = moe::parse_count("--threads", v); }},
             {"--backend", [&](const std::string& v) {
                if (v == "cpu") backend = moe::BackendKind::Cpu;
                else if (v == "cuda") backend = moe::BackendKind::Cuda;
                else if (v == "auto") backend = moe::BackendKind::Auto;
                else throw moe::InputError("--backend: expected cpu, cuda or auto, got '" + v + "'");
              }}}))
      return 0;
    if (ckpt.empty()) throw moe::InputError("--checkpoint is required (see --help)");
    moe::setup_logging("info");
    namespace fs = std::filesystem;
    if (!fs::exists(fs::path(ckpt) / "trainer_state.json")) {
      const std::string latest = moe::find_latest_checkpoint(ckpt);
      if (latest.empty()) throw moe::DataError(ckpt + ": no checkpoint there");
      ckpt = latest;
    }
    const moe::TrainerState st = moe::read_trainer_state(ckpt);
    // One rank evaluates: the saved expert-parallel layout does not apply.
    moe::Config cfg;
    try {
      cfg = moe::parse_config(st.config_yaml, {"parallel.ep_size=1", "parallel.transport=auto"}, 1);
    } catch (const moe::ConfigError& e) {
      throw moe::DataError(ckpt + ": its saved config is unreadable: " + e.what());
    }
    // Where the checkpoint was trained does not matter: --backend, else auto
    // (float64 reference runs stay on the CPU).
    if (backend) cfg.train.backend = *backend;
    else if (cfg.train.precision != moe::Precision::Float64) cfg.train.backend = moe::BackendKind::Auto;
    // The checkpoint holds fp32 master weights: a bfloat16 run evaluates in
    // float32 where there is no CUDA (the same weights, exact matmuls).
    if (cfg.train.precision == moe::Precision::BFloat16 &&
        (cfg.train.backend == moe::BackendKind::Cpu || !moe::cuda_available())) {
      cfg.train.precision = moe::Precision::Float32;
      spdlog::info("bfloat16 checkpoint evaluated in float32 on the CPU");
    }
    const moe::BackendKind kind = moe::resolve_backend(cfg);
    cfg.train.threads = int(threads);  // 0: all cores
    if (!data.empty()) cfg.data.val_path = data;
    auto val = moe::make_validation_reader(cfg);
    if (!val) throw moe::InputError("no validation data: pass --data");
    if (batch == 0) batch = cfg.train.micro_batch;
    nlohmann::json j = moe::with_element_types(cfg, [&]<typename T, typename A>() {
      return evaluate_checkpoint<T, A>(cfg, kind, ckpt, *val, int(batch), max_tokens);
    });
    if (output.empty()) output = (fs::path(ckpt) / "eval.json").string();
    std::ofstream f(output);
    if (!(f << j.dump(2) << '\n')) throw moe::InputError(output + ": cannot write");
    spdlog::info("wrote {}", output);
    return 0;
  });
}
