#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moe {

namespace {
// Shards start on 64-element boundaries (256 bytes in fp32: aligned for any
// vectorised kernel); the last replica's shard takes the remainder.
constexpr size_t kShardAlign = 64;

std::vector<int64_t> shard_parts(size_t n, int ranks) {
  const size_t per = (n + size_t(ranks) - 1) / size_t(ranks);
  const size_t part = (per + kShardAlign - 1) / kShardAlign * kShardAlign;
  std::vector<int64_t> parts(static_cast<size_t>(ranks));
  for (int p = 0; p < ranks; ++p) {
    const size_t lo = std::min(n, size_t(p) * part), hi = std::min(n, lo + part);
    parts[size_t(p)] = int64_t(hi - lo);
  }
  return parts;
}
}  // namespace

template <typename T, typename A>
Optimizer<T, A>::Optimizer(Backend<T, A>& be, ParamSet<T>& ps, int zero, Comm& world,
                           Comm& replica, Comm* ep)
    : be_(be), ps_(ps), zero_(zero > 0), world_(world), ep_(ep && ep->size() > 1 ? ep : nullptr) {
  experts_.begin = 0;
  experts_.size = ps.expert_size();
  experts_.host = &replica;
  dense_.begin = ps.expert_size();
  dense_.size = ps.size() - ps.expert_size();
  dense_.host = &world;
  size_t moments = 0;
  for (Region* r : {&experts_, &dense_}) {
    r->shard_begin = r->begin;
    r->shard_size = r->size;
    if (zero_) {
      r->parts = shard_parts(r->size, r->host->size());
      const int me = r->host->rank();
      for (int p = 0; p < me; ++p) r->shard_begin += size_t(r->parts[size_t(p)]);
      r->shard_size = size_t(r->parts[size_t(me)]);
    }
    r->moment_offset = moments;
    moments += r->shard_size;
  }
  moment_n_ = moments;
  m_ = alloc_array<T>(be, moment_n_);
  v_ = alloc_array<T>(be, moment_n_);
}

template <typename T, typename A>
Optimizer<T, A>::~Optimizer() {
  be_.free_bytes(m_);
  be_.free_bytes(v_);
}

template <typename T, typename A>
void Optimizer<T, A>::use_device_comms(Comm* world, Comm* replica) {
  device_world_ = world;
  dense_.device = world;
  experts_.device = world ? replica : nullptr;
}

// Without ZeRO, exactly the all-reduces of the data-parallel design: one over
// every parameter without expert parallelism, else the experts over their
// replicas and the rest over all ranks.
template <typename T, typename A>
void Optimizer<T, A>::reduce_gradients() {
  if (world_.size() == 1) return;
  if (zero_) {
    sum_region(experts_);
    sum_region(dense_);
    return;
  }
  const size_t ne = ps_.expert_size(), n = ps_.size();
  T* g = ps_.grads();
  if (device_world_) {
    be_.synchronize();  // the communicator's stream must see the finished backward
    if (!ep_) {
      device_world_->allreduce_sum(g, n);
      return;
    }
    if (experts_.device->size() > 1) experts_.device->allreduce_sum(g, ne);
    device_world_->allreduce_sum(g + ne, n - ne);
    return;
  }
  host_.resize(n);
  be_.to_host(host_.data(), g, n * sizeof(T));
  if (experts_.host->size() > 1) experts_.host->allreduce_sum(host_.data(), ne);
  world_.allreduce_sum(host_.data() + ne, n - ne);
  be_.to_device(g, host_.data(), n * sizeof(T));
}

template <typename T, typename A>
void Optimizer<T, A>::sum_region(Region& r) {
  if (r.host->size() == 1 || r.size == 0) return;
  T* g = ps_.grads() + r.begin;
  if (r.device) {
    be_.synchronize();
    r.device->reduce_scatter_sum(g, r.parts.data());
    return;
  }
  host_.resize(r.size);
  be_.to_host(host_.data(), g, r.size * sizeof(T));
  r.host->reduce_scatter_sum(host_.data(), r.parts.data());
  const size_t off = r.shard_begin - r.begin;
  be_.to_device(g + off, host_.data() + off, r.shard_size * sizeof(T));
}

template <typename T, typename A>
void Optimizer<T, A>::gather_region(Region& r) {
  if (r.host->size() == 1 || r.size == 0) return;
  T* w = ps_.params() + r.begin;
  if (r.device) {
    be_.synchronize();
    r.device->allgather(w, r.parts.data());
    be_.written_elsewhere(w, r.size * sizeof(T));  // the bf16 weight copies follow
    return;
  }
  host_.resize(r.size);
  const size_t off = r.shard_begin - r.begin;
  be_.to_host(host_.data() + off, w + off, r.shard_size * sizeof(T));
  r.host->allgather(host_.data(), r.parts.data());
  be_.to_device(w, host_.data(), r.size * sizeof(T));
}

template <typename T, typename A>
double Optimizer<T, A>::grad_norm() {
  const T* g = ps_.grads();
  if (zero_) {
    // Each parameter is in exactly one rank's shard: the replicas of an
    // expert split it, and the EP ranks hold different experts.
    double sq = be_.sum_squares(g + experts_.shard_begin, experts_.shard_size) +
                be_.sum_squares(g + dense_.shard_begin, dense_.shard_size);
    world_.allreduce_sum(&sq, 1);
    return std::sqrt(sq);
  }
  // The dense part is the same on all ranks, the expert part is spread over
  // the EP group.
  const size_t ne = ps_.expert_size();
  double expert_sq = be_.sum_squares(g, ne);
  if (ep_) ep_->allreduce_sum(&expert_sq, 1);
  return std::sqrt(expert_sq + be_.sum_squares(g + ne, ps_.size() - ne));
}

template <typename T, typename A>
void Optimizer<T, A>::update(size_t begin, size_t n, size_t moff, const AdamWParams& p) {
  if (n == 0) return;
  AdamWParams q = p;
  const size_t decay = ps_.decay_size();  // the decayed matrices lead the array
  q.decay_count = decay > begin ? std::min(decay - begin, n) : 0;
  be_.adamw_step(ps_.params() + begin, ps_.grads() + begin, m_ + moff, v_ + moff, n, q);
}

template <typename T, typename A>
void Optimizer<T, A>::step(const AdamWParams& p) {
  if (!zero_) {
    update(0, ps_.size(), 0, p);  // one launch over the whole array
    return;
  }
  for (Region* r : {&experts_, &dense_}) update(r->shard_begin, r->shard_size, r->moment_offset, p);
  gather_region(experts_);
  gather_region(dense_);
}

template <typename T, typename A>
void Optimizer<T, A>::moments_to_host(std::vector<T>& m, std::vector<T>& v) {
  m.assign(ps_.size(), T(0));
  v.assign(ps_.size(), T(0));
  for (const Region* r : {&experts_, &dense_}) {
    be_.to_host(m.data() + r->shard_begin, m_ + r->moment_offset, r->shard_size * sizeof(T));
    be_.to_host(v.data() + r->shard_begin, v_ + r->moment_offset, r->shard_size * sizeof(T));
    if (zero_ && r->host->size() > 1 && r->size > 0) {
      r->host->allgather(m.data() + r->begin, r->parts.data());
      r->host->allgather(v.data() + r->begin, r->parts.data());
    }
  }
}

template <typename T, typename A>
void Optimizer<T, A>::moments_from_host(const std::vector<T>& m, const std::vector<T>& v) {
  MOE_CHECK(m.size() == ps_.size() && v.size() == ps_.size(), "moments_from_host: size mismatch");
  for (const Region* r : {&experts_, &dense_}) {
    be_.to_device(m_ + r->moment_offset, m.data() + r->shard_begin, r->shard_size * sizeof(T));
    be_.to_device(v_ + r->moment_offset, v.data() + r->shard_begin, r->shard_size * sizeof(T));
  }
}

template class Optimizer<float>;
template class Optimizer<double>;
template class Optimizer<float, bf16>;

}  // namespace moe
