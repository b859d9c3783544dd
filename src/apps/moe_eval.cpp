// moe-eval: held-out perplexity and MaxVio_global of a checkpoint.
//   moe-eval --checkpoint DIR [--data VAL] [--max-tokens N] [--batch B] [--output FILE]
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "apps/cli.h"
#include "apps/common.h"
#include "backend/backend.h"
#include "comm/comm.h"
#include "core/file_io.h"
#include "core/path_check.h"
#include "data/shard_dataset.h"
#include "eval/evaluator.h"
#include "model/transformer.h"
#include "plan/memory_check.h"
#include "runtime/backend_choice.h"
#include "runtime/device_info.h"
#include "train/checkpoint.h"

namespace {

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

// Without --output the result goes into the checkpoint: eval.json for the
// whole split, eval_max<N>.json for a --max-tokens N sample, so a partial
// result never replaces a full one (nor the reverse).
std::string default_output(const std::string& ckpt, int64_t max_tokens) {
  const std::string name =
      max_tokens > 0 ? "eval_max" + std::to_string(max_tokens) + ".json" : "eval.json";
  return (std::filesystem::path(ckpt) / name).string();
}

}  // namespace

int main(int argc, char** argv) {
  moe::ensure_passive_thread_waits(argv);
  return moe::run_main("moe-eval", [&]() {
    std::string ckpt, data, output;
    std::optional<moe::BackendKind> backend;
    int64_t max_tokens = 0, batch = 0, threads = 0;
    std::string backend_name;
    bool force = false;
    CLI::App app{"Held-out perplexity and MaxVio_global of a checkpoint."};
    moe::cli::configure(app, "moe-eval");
    app.add_option("--checkpoint", ckpt,
                   "a checkpoint (step_* directory) or a checkpoint.dir (its newest)")
        ->type_name("DIR")
        ->required();
    app.add_option("--data", data,
                   "validation shards: a moe-data output directory (its val_*.bin), a glob or a "
                   "shard file (default: the checkpoint config's validation data)")
        ->type_name("VAL");
    app.add_option("--max-tokens", max_tokens,
                   "evaluate N tokens' worth of whole sequences, evenly spaced over the split (default: all)")
        ->type_name("N")
        ->check(moe::cli::integer_at_least(0));
    app.add_option("--batch", batch, "sequences per forward pass (default: train.micro_batch)")
        ->type_name("B")
        ->check(moe::cli::integer_at_least(0));
    app.add_option("--output", output,
                   "result JSON (default: DIR/eval.json, or DIR/eval_maxN.json with --max-tokens "
                   "N, so a partial result never replaces the whole split's)")
        ->type_name("FILE");
    app.add_option("--threads", threads, "CPU threads (default: all cores)")
        ->type_name("T")
        ->check(moe::cli::integer_in(0, 4096));
    app.add_option("--backend", backend_name,
                   "cpu, cuda or auto (default: auto = CUDA when a device is visible; a bfloat16 "
                   "checkpoint evaluates in float32 on the CPU)")
        ->type_name("B")
        ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    app.add_flag("--force", force,
                 "evaluate even when the memory plan exceeds the memory available "
                 "(MemAvailable and the cgroup limit, or the GPU's free memory), with a warning");
    if (!moe::cli::parse(app, argc, argv)) return 0;
    if (backend_name == "cpu") backend = moe::BackendKind::Cpu;
    if (backend_name == "cuda") backend = moe::BackendKind::Cuda;
    if (backend_name == "auto") backend = moe::BackendKind::Auto;
    moe::setup_logging("info");
    namespace fs = std::filesystem;
    if (!fs::exists(fs::path(ckpt) / "trainer_state.json")) {
      const std::string latest = moe::find_latest_checkpoint(ckpt);
      if (latest.empty()) throw moe::DataError(ckpt + ": no checkpoint there");
      ckpt = latest;
    }
    const moe::TrainerState st = moe::read_trainer_state(ckpt);
    if (output.empty()) output = default_output(ckpt, max_tokens);
    moe::check_output_file(output, "--output");  // before the evaluation, not after it
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
    // Its own default auto goes unannounced; a --backend auto is the user's.
    const moe::BackendKind kind = moe::resolve_backend(cfg, backend.has_value());
    cfg.train.threads = int(threads);  // 0: all cores
    if (!data.empty()) cfg.data.val_path = data;
    auto val = moe::make_validation_reader(cfg);
    if (!val) throw moe::InputError("no validation data: pass --data");
    if (batch == 0) batch = cfg.train.micro_batch;
    moe::check_memory(moe::plan_eval_memory(cfg, kind, int(batch)), kind, 0, 1,
                      batch > 1 ? std::vector<std::string>{"lower --batch"}
                                : std::vector<std::string>{},
                      force);
    nlohmann::json j = moe::with_element_types(cfg, [&]<typename T, typename A>() {
      return evaluate_checkpoint<T, A>(cfg, kind, ckpt, *val, int(batch), max_tokens);
    });
    // A file is replaced whole, never left half-written; a device or pipe
    // (/dev/stdout) is written as it is. A full disk is an IoError, exit 1.
    std::error_code ec;
    if (fs::exists(output, ec) && !fs::is_regular_file(output, ec)) {
      std::ofstream f(output);
      if (!(f << j.dump(2) << '\n')) throw moe::IoError(output + ": write failed");
    } else {
      moe::io::write_file_atomically(output, j.dump(2) + "\n");
    }
    spdlog::info("wrote {}", output);
    return 0;
  });
}
