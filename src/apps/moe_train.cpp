// moe-train: pretrain a MoE language model from a YAML config.
//   moe-train --config configs/tiny.yaml [--set key.path=value ...] [--resume auto|DIR]
#include <spdlog/spdlog.h>

#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/common.h"
#include "backend/backend.h"
#include "comm/comm.h"
#include "comm/mpi_env.h"
#include "comm/topology.h"
#include "comm/watchdog.h"
#include "core/dir_lock.h"
#include "core/keep_aside.h"
#include "data/shard_dataset.h"
#include "data/token_source.h"
#include "plan/memory_check.h"
#include "plan/memory_plan.h"
#include "runtime/backend_choice.h"
#include "runtime/device_info.h"
#include "train/checkpoint.h"
#include "train/stop_signal.h"
#include "train/trainer.h"

namespace {

constexpr const char* kFooter =
    "Keys of --config and --set: docs/config.md.\n"
    "SIGINT/SIGTERM/SIGUSR1: acknowledged at once on every rank; finish the step, write a\n"
    "checkpoint, exit 0; a second signal exits at once, without one.\n"
    "One moe-train per log.out_dir and checkpoint.dir: a second is refused (exit 2), naming the\n"
    "first (a lock file .moe.lock in each directory; a dead holder never blocks).\n";

struct Args {
  std::string config_path, resume;
  std::vector<std::string> overrides;
  bool plan = false, print_config = false, with_meta = false, force = false;
  int64_t world_size = 0;  // --plan only; 0: the launched world
};

// moe-train --plan: the plan of rank 0 (ranks are alike), printed by rank 0.
int print_plan(const Args& a, int launched_world, int rank) {
  const int W = a.world_size > 0 ? int(a.world_size) : launched_world;
  moe::Config cfg = moe::load_config(a.config_path, a.overrides, W);
  const moe::BackendKind kind =
      cfg.train.backend == moe::BackendKind::Cpu ? moe::BackendKind::Cpu : moe::BackendKind::Cuda;
  if (kind == moe::BackendKind::Cuda && cfg.train.precision == moe::Precision::Float64)
    throw moe::ConfigError("config: train.precision: float64 runs on the CPU backend only");
  const moe::MemoryPlan plan = moe::plan_memory(cfg, kind, W, 0);
  if (rank == 0) std::fputs(moe::format_plan(plan).c_str(), stdout);
  return 0;
}

// The checkpoint to resume from ("" for a fresh start); checks that its
// model matches this config and logs every other setting that changed.
std::string resolve_resume(const Args& a, const moe::Config& cfg, int world_size) {
  if (a.resume.empty()) return "";
  std::string dir;
  if (a.resume != "auto") {  // a checkpoint, or a checkpoint.dir: its newest
    dir = moe::checkpoint_in(a.resume);
    if (dir.empty())
      throw moe::InputError("--resume " + a.resume +
                            ": neither a checkpoint (trainer_state.json) nor a checkpoint.dir "
                            "(step_* checkpoints)");
    if (dir != a.resume)
      spdlog::info("resume: {} is a checkpoint.dir: its newest checkpoint is {}", a.resume, dir);
  } else {
    if (cfg.checkpoint.dir.empty())
      throw moe::InputError("--resume auto needs checkpoint.dir in the config");
    dir = moe::find_latest_checkpoint(cfg.checkpoint.dir);
    if (dir.empty()) {
      spdlog::info("resume auto: no checkpoint under {}: starting fresh", cfg.checkpoint.dir);
      return "";
    }
  }
  const moe::TrainerState st = moe::read_trainer_state(dir);
  // Checkpoints do not depend on the layout: the saved config is read for
  // this job's world size, or, when its expert parallelism does not fit
  // this world, without it (the layout then shows up as a changed setting).
  moe::Config saved;
  try {
    saved = moe::parse_config(st.config_yaml, {}, world_size);
  } catch (const moe::ConfigError&) {
    try {
      saved = moe::parse_config(st.config_yaml, {"parallel.ep_size=1"}, world_size);
    } catch (const moe::ConfigError& e) {
      throw moe::DataError(dir + ": its saved config is unreadable: " + e.what());
    }
  }
  for (const auto& d : moe::config_differences(saved, cfg)) {
    if (moe::is_architectural_key(d.key))
      throw moe::InputError(dir + ": checkpoint of another model: " + d.key + " is " + d.before +
                            " there, " + d.after + " here");
    spdlog::info("resume: {} changed from {} to {}", d.key, d.before, d.after);
  }
  return dir;
}

template <typename T, typename A>
int train(const moe::Config& cfg, moe::BackendKind kind, int local_rank, int64_t node_id,
          const std::string& resume_dir, moe::Comm& world, const moe::Communicators& comms) {
  auto be = moe::make_backend<T, A>(cfg, kind, local_rank);
  if (const std::string caveat = moe::backend_caveat(kind); !caveat.empty())
    spdlog::warn("{}", caveat);
  auto data = moe::make_train_source(cfg);
  auto val = moe::make_validation_reader(cfg);
  if (cfg.train.eval_interval > 0 && !val)
    throw moe::ConfigError(
        "config: train.eval_interval: set, but there is no validation data (data.val_path, or "
        "val_*.bin shards in data.path)");
  moe::Trainer<T, A> trainer(cfg, *be, world, *data, val.get(), comms.ep.get(), comms.replica.get());
  trainer.set_node(node_id);  // the fan-out in nodes (metrics.jsonl)
  // GPUs: gradients and MoE rows move in GPU memory over NCCL, ordered with
  // the backend's stream (declared after `be`, so destroyed before it).
  const std::unique_ptr<moe::Comm> device_world =
      moe::make_device_world_comm(cfg, kind, world, local_rank, be->native_stream());
  moe::Communicators device_comms;
  if (device_world) {
    if (cfg.parallel.ep_size > 1)
      device_comms = moe::make_communicators(
          *device_world,
          moe::Topology(world.rank(), world.size(), cfg.parallel.ep_size, cfg.moe.n_routed));
    trainer.use_device_comms(device_world.get(), device_comms.ep.get(), device_comms.replica.get());
    spdlog::info("gradients and expert all-to-all: in GPU memory over {}", device_world->describe());
  }
  if (!resume_dir.empty()) {
    trainer.resume_from(resume_dir);
    spdlog::info("resumed from {} at step {}", resume_dir, trainer.next_step());
  }
  const auto& ps = trainer.model().params();
  spdlog::info("model: {} parameters on this rank ({} tensors), {} layers ({} MoE), {} routed + "
               "{} shared experts, top-{}",
               ps.size(), ps.all().size(), cfg.model.layers, cfg.model.moe_layers(),
               cfg.moe.n_routed, cfg.moe.n_shared, cfg.moe.top_k);
  spdlog::info("balance: {} | backend: {} ({}, {} threads per rank) | data: {}",
               moe::describe_balance(cfg.balance), be->name(), moe::to_string(cfg.train.precision),
               cfg.train.threads, data->describe());
  spdlog::info("batch: {} sequences x {} tokens per step, micro-batch {} ({} per rank per step), "
               "{} steps",
               cfg.train.global_batch, cfg.model.seq_len, cfg.train.micro_batch,
               cfg.train.global_batch / cfg.train.micro_batch / world.size(), cfg.train.steps);
  spdlog::info("optimizer: AdamW moments of {} parameters on this rank{}",
               trainer.optimizer().moment_elements(),
               cfg.train.zero ? " (ZeRO-1 shards of " + std::to_string(ps.size()) + ")" : "");
  if (val) spdlog::info("validation: {}", val->describe());
  std::unique_ptr<moe::MetricsLog> log;
  if (world.rank() == 0) {
    // A fresh run must neither prune an earlier run's checkpoints (keep_last)
    // nor leave them for --resume auto to mistake for its own.
    if (resume_dir.empty() && !moe::find_latest_checkpoint(cfg.checkpoint.dir).empty())
      spdlog::info("fresh run: kept the earlier checkpoints of {} as {}", cfg.checkpoint.dir,
                   moe::keep_aside(cfg.checkpoint.dir, moe::kDirLockName));
    log = std::make_unique<moe::MetricsLog>(cfg, moe::config_to_yaml(cfg), !resume_dir.empty());
    if (kind == moe::BackendKind::Cuda) {  // MFU against the GPUs' bf16 peak, when known
      const double peak = moe::gpu_info(moe::cuda_device_for_rank(local_rank)).peak_bf16_tflops;
      if (peak > 0) log->set_peak_flops(peak * 1e12 * world.size());
    }
  }
  moe::set_stop_context("moe-train", world.size() > 1 ? world.rank() : -1,
                        !cfg.checkpoint.dir.empty());
  moe::install_stop_signal_handlers();
  std::unique_ptr<moe::Watchdog> watchdog;
  if (world.size() > 1 && cfg.parallel.timeout_seconds > 0) {
    watchdog = std::make_unique<moe::Watchdog>(cfg.parallel.timeout_seconds, [&world](double idle) {
      std::fprintf(stderr,
                   "moe-train: rank %d: no training step completed for %.0f s "
                   "(parallel.timeout_seconds): a peer hung or died; ending the job\n",
                   world.rank(), idle);
      std::fflush(stderr);
      world.abort(1);
    });
    trainer.on_progress = [w = watchdog.get()] { w->beat(); };
  }
  const moe::RunOutcome outcome = trainer.run(log.get());
  if (outcome == moe::RunOutcome::Completed)
    spdlog::info("done: {} steps, metrics in {}/metrics.jsonl", cfg.train.steps, cfg.log.out_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::ensure_passive_thread_waits(argv);
  // MPI only when launched by mpirun/srun: a single process stays MPI-free.
  moe::MpiEnvironment mpi(/*only_if_launched=*/true);
  std::unique_ptr<moe::Comm> world = mpi.world();
  if (world->size() > 1) {
    moe::Comm* w = world.get();
    moe::set_job_abort([w](int code) { w->abort(code); }, w->rank());
  }
  return moe::run_main("moe-train", [&]() {
    Args a;
    CLI::App app{"Pretrain a MoE language model from a YAML config."};
    moe::cli::configure(app, "moe-train", kFooter);
    app.add_option("--config", a.config_path, "run configuration (YAML)")
        ->type_name("FILE")
        ->required();
    app.add_option("--set", a.overrides,
                   "override one config key, e.g. --set train.steps=100 (repeatable)")
        ->type_name("KEY=VALUE")
        ->allow_extra_args(false);
    app.add_option("--resume", a.resume,
                   "continue from the newest checkpoint under checkpoint.dir (auto; starts "
                   "fresh when there is none), from checkpoint directory DIR, or from the newest "
                   "checkpoint of DIR when DIR is a checkpoint.dir")
        ->type_name("auto|DIR");
    app.add_flag("--plan", a.plan,
                 "print the memory plan of one rank (weights, gradients, optimizer, "
                 "activations, scratch) and FLOPs per token, then exit; allocates nothing, "
                 "needs no GPU (plans for CUDA unless train.backend is cpu)");
    CLI::Option* world_size =
        app.add_option("--world-size", a.world_size,
                       "ranks to plan for, or to check the config against with --print-config "
                       "(default: the ranks launched, 1 without mpirun)")
            ->type_name("W")
            ->check(moe::cli::integer_at_least(1));
    app.add_flag("--force", a.force,
                 "start even when the memory plan exceeds the memory available (MemAvailable "
                 "and the cgroup limit, or the GPU's free memory), with a warning");
    app.add_flag("--print-config", a.print_config,
                 "print the resolved config (bases, file and --set applied; every key) as YAML "
                 "and exit");
    app.add_flag("--with-meta", a.with_meta,
                 "with --print-config: each key as {value, training: changes|seed|none, "
                 "read_when}, whether it changes what a run trains (scripts/report.py groups "
                 "runs by it; docs/config.md)");
    if (!moe::cli::parse(app, argc, argv)) return 0;
    if (a.with_meta && !a.print_config)
      throw moe::InputError("--with-meta needs --print-config (see moe-train --help)");
    if (world_size->count() > 0 && !a.plan && !a.print_config)
      throw moe::InputError("--world-size needs --plan or --print-config (see moe-train --help)");
    if (a.plan) return print_plan(a, world->size(), world->rank());
    if (a.print_config) {
      // --world-size: checked as it would run on W ranks (scripts/sweep.sh --ranks).
      const int W = a.world_size > 0 ? int(a.world_size) : world->size();
      const moe::Config cfg = moe::load_config(a.config_path, a.overrides, W);
      const std::string text =
          a.with_meta ? moe::config_to_yaml_with_meta(cfg) : moe::config_to_yaml(cfg);
      if (world->rank() == 0) std::fputs(text.c_str(), stdout);
      return 0;
    }

    moe::Config cfg = moe::load_config(a.config_path, a.overrides, world->size());
    moe::check_data_present(cfg);  // a preset without its corpus: one line, before any work
    // Rank 0 alone talks; the others report errors only.
    moe::setup_logging(world->rank() == 0 ? cfg.log.level : "error");
    const moe::BackendKind kind = moe::resolve_backend(cfg);
    if (cfg.train.threads == 0 && mpi.local_size() > 1)  // share the node's cores
      cfg.train.threads = std::max(1, omp_get_num_procs() / mpi.local_size());
    if (cfg.train.threads == 0) cfg.train.threads = omp_get_num_procs();
    // Before anything is allocated: a plan too big is one line, not the OOM killer.
    moe::check_training_memory(cfg, kind, world->size(), world->rank(), mpi.local_rank(),
                               mpi.local_size(), a.force, !cfg.checkpoint.dir.empty());
    // One writer per run directory (core/dir_lock.h), from before anything in
    // them is touched until the process ends; taking it also tries each path,
    // so a bad one fails now, not at the first save. Only rank 0 writes there
    // (the other ranks only read a checkpoint to resume); its refusal ends the job.
    const std::vector<moe::DirLock> locks =
        world->rank() == 0 ? moe::lock_dirs({{cfg.log.out_dir, "log.out_dir"},
                                             {cfg.checkpoint.dir, "checkpoint.dir"}},
                                            "moe-train")
                           : std::vector<moe::DirLock>{};
    const moe::Topology topo(world->rank(), world->size(), cfg.parallel.ep_size,
                             cfg.moe.n_routed);
    const moe::Communicators comms = moe::make_communicators(*world, topo);
    if (world->size() > 1) spdlog::info("{}", topo.describe());
    const std::string resume_dir = resolve_resume(a, cfg, world->size());
    return moe::with_element_types(cfg, [&]<typename T, typename A>() {
      return train<T, A>(cfg, kind, mpi.local_rank(), mpi.node_id(), resume_dir, *world, comms);
    });
  });
}
