// AdamW over the parameter set and the gradient synchronisation before it:
// the owner of the AdamW moments (docs/design.md section 4, docs/parallel.md).
//
// The flat parameter array has two regions with different replicas: the
// routed experts [0, expert_size) are held by the ranks of this rank's
// replica group, everything else by every rank. Without ZeRO each rank
// all-reduces both regions' gradients over their replicas and updates every
// parameter it holds. With ZeRO stage 1 (train.zero: 1) each region is cut
// into one contiguous shard per replica: the gradients are reduce-scattered,
// a rank keeps the moments of its shards only and updates those, and the
// updated weights are all-gathered. The weights themselves stay whole on
// every rank (the forward reads them; they are the fp32 masters, from which
// bf16 matmuls round their operands).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "config/config.h"
#include "comm/comm.h"
#include "layers/params.h"

namespace moe {

template <typename T, typename A = T>
class Optimizer {
 public:
  // world: every rank; replica: the ranks holding this rank's experts (the
  // world without expert parallelism); ep: this rank's EP group, or null.
  // zero: train.zero. Allocates the moments (zero).
  Optimizer(Backend<T, A>& be, ParamSet<T>& ps, int zero, Comm& world, Comm& replica, Comm* ep);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Communicators on backend memory over the same ranks as world and
  // replica (NcclComm): the collectives then run in place instead of
  // through host copies. Null world: back to host staging.
  void use_device_comms(Comm* world, Comm* replica);

  // Sums this step's gradients over the replicas of each parameter. After
  // it, every gradient this rank updates holds the global sum (with ZeRO,
  // only its shards; the rest of the gradient array is stale).
  void reduce_gradients();
  // Norm of the whole model's gradient (every parameter once, experts of
  // every EP rank included); the same value on every rank.
  double grad_norm();
  // AdamW on the parameters this rank updates (decay on the matrices, see
  // ParamSet), then, with ZeRO, the updated shards to every replica.
  void step(const AdamWParams& p);

  // The moments of every parameter this rank holds, in the parameter set's
  // layout (checkpoints). Collective with ZeRO (the shards are gathered).
  void moments_to_host(std::vector<T>& m, std::vector<T>& v);
  // Loads them from that layout (each rank keeps its shards).
  void moments_from_host(const std::vector<T>& m, const std::vector<T>& v);

  bool sharded() const { return zero_; }
  // Moment elements this rank holds (each of m and v).
  size_t moment_elements() const { return moment_n_; }

 private:
  // One region of the parameter array and the ranks that replicate it.
  struct Region {
    size_t begin = 0, size = 0;  // in the flat arrays
    Comm* host = nullptr;        // replicas (host memory)
    Comm* device = nullptr;      // the same ranks on backend memory, or null
    std::vector<int64_t> parts;  // ZeRO: shard of each replica rank (sums to size)
    size_t shard_begin = 0, shard_size = 0;  // this rank's, absolute
    size_t moment_offset = 0;    // where its moments start in m_ / v_
  };
  void sum_region(Region& r);
  void gather_region(Region& r);
  // Adam over [begin, begin + n) of the flat arrays; moments at m_ + moff.
  void update(size_t begin, size_t n, size_t moff, const AdamWParams& p);

  Backend<T, A>& be_;
  ParamSet<T>& ps_;
  bool zero_;
  Comm& world_;
  Comm* ep_;  // null: all experts local
  Comm* device_world_ = nullptr;
  Region experts_, dense_;
  size_t moment_n_ = 0;
  T *m_ = nullptr, *v_ = nullptr;
  std::vector<T> host_;  // staging of the host collectives
};

}  // namespace moe
