#include "train/checkpoint_gather.h"

#include "moe/moe_layer.h"

namespace moe {

template <typename T, typename A>
std::vector<TensorState<T>> gather_checkpoint_tensors(const Config& cfg, const ParamSet<T>& ps,
                                                      Optimizer<T, A>& optimizer, Comm& world,
                                                      Comm* ep) {
  // Rank 0 writes; with expert parallelism the other ranks of the first EP
  // group send it their experts. ZeRO-1 shards are gathered on every rank
  // (a collective).
  const bool writes = world.rank() == 0 || (ep && world.rank() < ep->size());
  std::vector<T> m, v;
  if (writes || optimizer.sharded()) optimizer.moments_to_host(m, v);
  if (!ep) return world.rank() == 0 ? tensor_states(ps, m, v) : std::vector<TensorState<T>>{};
  if (!writes) return {};
  // The expert block (parameters and both moments) of each rank of the
  // first EP group, to rank 0.
  const size_t ne = ps.expert_size();
  const int P = ep->size();
  std::vector<T> mine(3 * ne), all;
  {
    const std::vector<T> p = ps.params_to_host();
    std::copy(p.begin(), p.begin() + ne, mine.begin());
    std::copy(m.begin(), m.begin() + ne, mine.begin() + ne);
    std::copy(v.begin(), v.begin() + ne, mine.begin() + 2 * ne);
  }
  std::vector<int64_t> send(P, 0), recv(P, 0);
  send[0] = int64_t(mine.size());
  if (ep->rank() == 0)
    for (int q = 0; q < P; ++q) recv[q] = int64_t(mine.size());
  all.resize(ep->rank() == 0 ? mine.size() * P : 0);
  ep->alltoallv(mine.data(), send.data(), all.data(), recv.data());
  if (world.rank() != 0) return {};

  std::vector<TensorState<T>> out;
  for (auto& t : tensor_states(ps, m, v))
    if (!ps.info(ps.find(t.name)).expert) out.push_back(std::move(t));
  const int per_rank = cfg.moe.n_routed / P;
  for (int q = 0; q < P; ++q) {
    const T* base = all.data() + size_t(q) * 3 * ne;
    size_t off = 0;
    for (ExpertParam& e : expert_region_layout(cfg, q * per_rank, per_rank)) {
      const size_t n = size_t(e.shape[0] * e.shape[1]);
      TensorState<T> t;
      t.name = std::move(e.name);
      t.shape = std::move(e.shape);
      t.param.assign(base + off, base + off + n);
      t.m.assign(base + ne + off, base + ne + off + n);
      t.v.assign(base + 2 * ne + off, base + 2 * ne + off + n);
      off += n;
      out.push_back(std::move(t));
    }
  }
  return out;
}

template std::vector<TensorState<float>> gather_checkpoint_tensors(const Config&,
                                                                   const ParamSet<float>&,
                                                                   Optimizer<float>&, Comm&, Comm*);
template std::vector<TensorState<double>> gather_checkpoint_tensors(const Config&,
                                                                    const ParamSet<double>&,
                                                                    Optimizer<double>&, Comm&,
                                                                    Comm*);
template std::vector<TensorState<float>> gather_checkpoint_tensors(const Config&,
                                                                   const ParamSet<float>&,
                                                                   Optimizer<float, bf16>&, Comm&,
                                                                   Comm*);

}  // namespace moe
