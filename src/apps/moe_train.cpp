// moe-train: pretrain a MoE language model from a YAML config.
//   moe-train --config configs/tiny.yaml [--set key.path=value ...]
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "apps/common.h"
#include "backend/backend.h"
#include "data/token_source.h"
#include "dist/comm.h"
#include "train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: moe-train --config FILE [--set key.path=value]...\n"
    "  --config FILE      run configuration (YAML; keys in docs/config.md)\n"
    "  --set k=v          override one config key, e.g. --set train.steps=100\n"
    "  --help             this text\n"
    "  --version          print the version\n";

template <typename T>
void train(const moe::Config& cfg, const std::string& config_yaml) {
  auto be = moe::make_cpu_backend<T>(cfg.train.threads);
  moe::LocalComm comm;
  auto data = moe::make_train_source(cfg);
  moe::Trainer<T> trainer(cfg, *be, comm, *data);
  const auto& ps = trainer.model().params();
  spdlog::info("model: {} parameters ({} tensors), {} layers ({} MoE), {} routed + {} shared "
               "experts, top-{}",
               ps.size(), ps.all().size(), cfg.model.layers, cfg.model.moe_layers(),
               cfg.moe.n_routed, cfg.moe.n_shared, cfg.moe.top_k);
  spdlog::info("balance: {} | backend: {} ({}) | data: {}", moe::describe_balance(cfg.balance),
               be->name(), moe::to_string(cfg.train.precision), data->describe());
  spdlog::info("batch: {} sequences x {} tokens per step, micro-batch {} ({} per step), {} steps",
               cfg.train.global_batch, cfg.model.seq_len, cfg.train.micro_batch,
               cfg.train.global_batch / cfg.train.micro_batch, cfg.train.steps);
  if (!cfg.checkpoint.dir.empty())
    spdlog::warn("checkpoint.dir is set, but checkpointing is not built yet: no checkpoint will be "
                 "written");
  moe::MetricsLog log(cfg, config_yaml);
  trainer.run(0, &log);
  spdlog::info("done: metrics in {}/metrics.jsonl", cfg.log.out_dir);
}

}  // namespace

int main(int argc, char** argv) {
  moe::ensure_passive_openmp_wait(argv);
  return moe::run_main("moe-train", [&]() {
    std::string config_path;
    std::vector<std::string> overrides;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw moe::InputError(a + " needs a value (see --help)");
        return argv[++i];
      };
      if (a == "--help" || a == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (a == "--version") {
        std::printf("moe-train %s\n", MOE_VERSION);
        return 0;
      } else if (a == "--config") {
        config_path = value();
      } else if (a == "--set") {
        overrides.push_back(value());
      } else {
        throw moe::InputError("unknown argument '" + a + "' (see --help)");
      }
    }
    if (config_path.empty()) throw moe::InputError("--config is required (see --help)");

    const moe::Config cfg = moe::load_config(config_path, overrides, 1);
    moe::setup_logging(cfg.log.level);
    moe::resolve_backend_or_throw(cfg);
    const std::string yaml = moe::config_to_yaml(cfg);
    if (cfg.train.precision == moe::Precision::Float64)
      train<double>(cfg, yaml);
    else
      train<float>(cfg, yaml);
    return 0;
  });
}
