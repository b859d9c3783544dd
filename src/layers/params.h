// The parameter set: every trainable tensor of the model, named, in one flat
// backend buffer (with the gradients alongside), so that the optimizer,
// gradient norm and all-reduce each see one contiguous array. The AdamW
// moments belong to the Optimizer (src/train/optimizer.h), in this layout.
//
// Layout: [routed-expert matrices | other matrices | norm weights]. The first
// two regions have weight decay (AdamW runs as two calls); the first holds
// what expert parallelism shards over ranks (its gradients are summed over
// the expert's replicas, the rest over all ranks). Within each region
// tensors keep their registration order, so the experts of a layer
// (registered one after another) form one contiguous [E, out, in] block for
// the grouped GEMM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace moe {

enum class ParamInit { Normal, Ones, Zeros };

struct ParamInfo {
  std::string name;            // e.g. "layers.2.experts.5.w13"
  std::vector<int64_t> shape;  // row-major
  size_t numel = 0;
  size_t offset = 0;           // into the flat buffers (set by finalize)
  bool decay = true;
  bool expert = false;         // a routed expert's weight (sharded by expert parallelism)
  ParamInit init = ParamInit::Normal;
};

template <typename T>
class ParamSet {
 public:
  using Id = int;

  // Registration (before finalize).
  Id add(const std::string& name, std::vector<int64_t> shape, ParamInit init, bool decay,
         bool expert = false);
  // Assigns offsets and allocates params and grads (both zero).
  void finalize(BackendBase& be);
  ~ParamSet();

  // Fills every tensor per its init: Normal ~ N(0, std^2) from Philox keyed by
  // (seed, tensor name), so values do not depend on layout or backend.
  void init(uint64_t seed, double std);

  T* param(Id id) const { return params_ + info_[id].offset; }
  T* grad(Id id) const { return grads_ + info_[id].offset; }
  const ParamInfo& info(Id id) const { return info_[id]; }
  // The tensor called `name`; throws InternalError if there is none.
  Id find(const std::string& name) const;
  const std::vector<ParamInfo>& all() const { return info_; }
  size_t size() const { return total_; }
  size_t decay_size() const { return n_decay_; }    // [0, decay_size) has weight decay
  size_t expert_size() const { return n_expert_; }  // [0, expert_size) are routed experts

  T* params() const { return params_; }
  T* grads() const { return grads_; }

  void zero_grads();
  std::vector<T> params_to_host() const;
  void params_from_host(const std::vector<T>& host);
  std::vector<T> grads_to_host() const;

 private:
  BackendBase* be_ = nullptr;
  std::vector<ParamInfo> info_;
  size_t total_ = 0, n_decay_ = 0, n_expert_ = 0;
  T *params_ = nullptr, *grads_ = nullptr;
};

}  // namespace moe
