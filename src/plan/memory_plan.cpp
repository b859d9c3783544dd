#include "plan/memory_plan.h"

#include <cstdio>
#include <memory>

#include "runtime/backend_choice.h"
#include "backend/backend.h"
#include "core/error.h"
#include "comm/topology.h"
#include "model/flops.h"
#include "model/transformer.h"
#include "moe/balancer.h"
#include "train/optimizer.h"

namespace moe {
namespace {

[[noreturn]] void no_compute() {
  throw InternalError("memory plan: the counting backend runs no op (a plan computes nothing)");
}

// A backend that hands out distinct addresses of no memory and counts the
// bytes asked for. Building a Transformer on it runs every allocation and
// nothing else (its constructor only copies the initial bias in).
template <typename T, typename A>
class CountingBackend final : public Backend<T, A> {
 public:
  std::string name() const override { return "plan"; }
  void* alloc_bytes(size_t bytes) override {
    void* p = reinterpret_cast<void*>(next_);
    next_ += (bytes + 255) / 256 * 256 + 256;
    this->count_alloc(p, bytes);
    return p;
  }
  void free_bytes(void* p) override { this->count_free(p); }
  void to_device(void*, const void*, size_t) override {}
  void to_host(void*, const void*, size_t) override { no_compute(); }
  void copy(void*, const void*, size_t) override { no_compute(); }
  void zero(void*, size_t) override {}

  // Every op of backend.h throws: a plan computes nothing. Generated from the
  // op list, whose parameter names go unused here.
  using Param = T;
  using Act = A;
#define MOE_NO_COMPUTE(ret, name, params) ret name params override { no_compute(); }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
  MOE_BACKEND_OPS(MOE_NO_COMPUTE)
#pragma GCC diagnostic pop
#undef MOE_NO_COMPUTE

 private:
  uintptr_t next_ = 0x10000;
};

// An EP group that has a rank and a size and never communicates: the model
// reads only those two to lay out its experts.
class ShapeComm final : public Comm {
 public:
  ShapeComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(int64_t*, size_t) override { fail(); }
  void allreduce_sum(float*, size_t) override { fail(); }
  void allreduce_sum(double*, size_t) override { fail(); }
  void reduce_scatter_sum(float*, const int64_t*) override { fail(); }
  void reduce_scatter_sum(double*, const int64_t*) override { fail(); }
  void allgather(float*, const int64_t*) override { fail(); }
  void allgather(double*, const int64_t*) override { fail(); }
  void alltoallv(const int64_t*, const int64_t*, int64_t*, const int64_t*) override { fail(); }
  void alltoallv(const float*, const int64_t*, float*, const int64_t*) override { fail(); }
  void alltoallv(const double*, const int64_t*, double*, const int64_t*) override { fail(); }
  void alltoallv(const bf16*, const int64_t*, bf16*, const int64_t*) override { fail(); }
  void broadcast(void*, size_t, int) override { fail(); }
  void barrier() override { fail(); }
  std::unique_ptr<Comm> split(int, int) override { fail(); }
  [[noreturn]] void abort(int) override { fail(); }
  std::string describe() const override { return "plan"; }

 private:
  [[noreturn]] static void fail() { throw InternalError("memory plan: no communication"); }
  int rank_, size_;
};

// The CUDA backend's own device buffers for N tokens per forward (its
// allocations outside the model's): cuBLASLt's 32 MiB split-K workspace, the
// small kernel workspaces (norm, attention and dispatch partials; 16 MiB
// covers them at any preset), and in bf16 the fp32 staging of the router's
// input and input gradient, plus, for a head_dim without tensor-core
// attention (not 64 or 128), of the attention's operands (qkv, out, dout,
// dqkv); src/backend/cuda/cuda_backend.cpp. The CUDA context and NCCL's
// buffers are not backend allocations and are not counted. Not counted
// either: hd 128 on a device without the tensor-core kernels' shared memory
// (sm_86, sm_89) stages those operands too (attention_tc_supported).
size_t cuda_workspace_bytes(const Config& cfg, bool bf16) {
  const size_t N = size_t(cfg.train.micro_batch) * cfg.model.seq_len, D = cfg.model.hidden;
  const int hd = cfg.model.head_dim();
  size_t b = (size_t(32) << 20) + (size_t(16) << 20);
  if (bf16) b += 2 * N * D * sizeof(float);
  if (bf16 && hd != 64 && hd != 128) b += (N * 3 * D + N * 3 * D) * sizeof(float);
  return b;
}

// `training`: with AdamW's moments (moe-eval builds the model and its bias only).
template <typename T, typename A>
MemoryPlan count(const Config& cfg, BackendKind kind, const Topology& topo, bool training) {
  CountingBackend<T, A> be;
  MemoryPlan p;
  std::unique_ptr<ShapeComm> ep;
  if (topo.ep_size > 1) ep = std::make_unique<ShapeComm>(topo.ep_rank, topo.ep_size);
  ShapeComm world(topo.world_rank, topo.world_size), replica(topo.ep_group, topo.dp_size);
  {
    Transformer<T, A> model(cfg, be, cfg.train.micro_batch, ep.get());
    Balancer balancer(cfg.balance, model.moe_layers(), cfg.moe.n_routed, &be);  // the bias
    ParamSet<T>& ps = model.params();
    p.local_params = ps.size();
    p.weights = p.grads = ps.size() * sizeof(T);
    p.scratch = model.scratch_bytes();
    p.activations = be.current_bytes() - p.weights - p.grads - p.scratch;
    if (training) {
      const size_t before = be.current_bytes();
      Optimizer<T, A> optimizer(be, ps, cfg.train.zero, world, topo.ep_size > 1 ? replica : world,
                                ep.get());
      p.optimizer = be.current_bytes() - before;
    }
    p.zero = cfg.train.zero;
    p.loss_chunk_rows = model.loss_chunk_rows();
    if (kind == BackendKind::Cuda && is_bf16_v<A>) {
      // Every 2-D weight a bf16 matmul reads: all but the embedding table
      // (a lookup) and the routers (fp32 matmuls).
      for (const ParamInfo& info : ps.all()) {
        const bool router = info.name.size() >= 7 &&
                            info.name.compare(info.name.size() - 7, 7, ".router") == 0;
        if (info.shape.size() == 2 && info.name != "embed" && !router)
          p.weight_copies += info.numel * sizeof(bf16);
      }
    }
  }
  if (kind == BackendKind::Cuda) p.workspace = cuda_workspace_bytes(cfg, is_bf16_v<A>);
  return p;
}

// Bytes in GiB, or MiB for plans under a GiB (CPU-sized models).
std::string size_text(size_t b, bool mib) {
  char buf[32];
  if (mib)
    std::snprintf(buf, sizeof buf, "%9.2f MiB", double(b) / double(size_t(1) << 20));
  else
    std::snprintf(buf, sizeof buf, "%9.2f GiB", double(b) / double(size_t(1) << 30));
  return buf;
}

}  // namespace

namespace {
MemoryPlan plan(const Config& cfg, BackendKind kind, int world_size, int rank, bool training) {
  const Topology topo(rank, world_size, cfg.parallel.ep_size, cfg.moe.n_routed);
  MemoryPlan p = with_element_types(cfg, [&]<typename T, typename A>() {
    return count<T, A>(cfg, kind, topo, training);
  });
  p.precision = to_string(cfg.train.precision);
  p.recompute = to_string(cfg.train.recompute);
  p.backend = kind;
  p.world_size = world_size;
  p.rank = rank;
  p.ep_size = cfg.parallel.ep_size;
  p.micro_batch = cfg.train.micro_batch;
  p.seq_len = cfg.model.seq_len;
  p.total_params = total_parameters(cfg.model, cfg.moe);
  p.active_params = active_parameters(cfg.model, cfg.moe);
  p.flops_per_token = train_flops_per_token(cfg.model, cfg.moe);
  return p;
}
}  // namespace

MemoryPlan plan_memory(const Config& cfg, BackendKind kind, int world_size, int rank) {
  return plan(cfg, kind, world_size, rank, /*training=*/true);
}

MemoryPlan plan_eval_memory(const Config& cfg, BackendKind kind, int batch) {
  Config c = cfg;
  c.train.micro_batch = batch;
  c.parallel.ep_size = 1;
  return plan(c, kind, 1, 0, /*training=*/false);
}

std::string format_plan(const MemoryPlan& p) {
  std::string out;
  char line[256];
  auto add = [&](const char* fmt, auto... v) {
    std::snprintf(line, sizeof line, fmt, v...);
    out += line;
  };
  const bool mib = p.total() < (size_t(1) << 30);
  auto row = [&](const char* what, size_t b, const std::string& note) {
    add("  %-18s %s%s\n", what, size_text(b, mib).c_str(), note.c_str());
  };
  add("memory plan: rank %d of %d (ep_size %d, zero %d), %s on %s, micro-batch %d x %d tokens, "
      "recompute %s\n",
      p.rank, p.world_size, p.ep_size, p.zero, p.precision.c_str(), to_string(p.backend),
      p.micro_batch, p.seq_len, p.recompute.c_str());
  add("  parameters         %.2fM total, %.2fM active per token, %.2fM on this rank\n",
      double(p.total_params) / 1e6, double(p.active_params) / 1e6, double(p.local_params) / 1e6);
  add("  FLOPs per token    %.4g (training: forward + backward)\n", double(p.flops_per_token));
  row("weights", p.weights, "");
  row("gradients", p.grads, "");
  row("optimizer state", p.optimizer,
      p.zero ? "  (AdamW m and v of this rank's ZeRO-1 shards)" : "  (AdamW m and v)");
  row("bf16 weight copies", p.weight_copies, "");
  row("activations", p.activations, "  (kept for backward)");
  row("scratch", p.scratch,
      "  (one layer's backward; loss chunks of " + std::to_string(p.loss_chunk_rows) + " tokens)");
  row("workspace", p.workspace,
      p.backend == BackendKind::Cuda ? "  (CUDA backend buffers, estimated)" : "  (none on the CPU)");
  row("total", p.total(),
      p.backend == BackendKind::Cuda ? " per rank, plus the CUDA context" : " per rank");
  return out;
}

nlohmann::json plan_to_json(const MemoryPlan& p) {
  return {{"precision", p.precision},
          {"recompute", p.recompute},
          {"backend", to_string(p.backend)},
          {"world_size", p.world_size},
          {"rank", p.rank},
          {"ep_size", p.ep_size},
          {"zero", p.zero},
          {"micro_batch", p.micro_batch},
          {"total_parameters", p.total_params},
          {"active_parameters", p.active_params},
          {"local_parameters", p.local_params},
          {"flops_per_token", p.flops_per_token},
          {"bytes",
           {{"weights", p.weights},
            {"gradients", p.grads},
            {"optimizer", p.optimizer},
            {"weight_copies", p.weight_copies},
            {"activations", p.activations},
            {"scratch", p.scratch},
            {"workspace", p.workspace},
            {"total", p.total()}}},
          {"loss_chunk_tokens", p.loss_chunk_rows}};
}

}  // namespace moe
