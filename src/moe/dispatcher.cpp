#include "moe/dispatcher.h"

#include "core/error.h"
#include "moe/fanout.h"

namespace moe {

template <typename T, typename A>
Dispatcher<T, A>::Dispatcher(int E, int K, Comm* ep)
    : E_(E),
      K_(K),
      ep_(ep),
      P_(ep ? ep->size() : 1),
      rank_(ep ? ep->rank() : 0),
      counts_(E),
      offsets_(E + 1),
      expert_offsets_(E / P_ + 1, 0),
      send_rows_(P_),
      recv_rows_(P_) {
  MOE_CHECK(E % P_ == 0, "Dispatcher: experts not divisible by the expert-parallel size");
  for (int e = 0; e < E; ++e) rank_of_expert_.push_back(owner_of(e));
}

template <typename T, typename A>
void Dispatcher<T, A>::set_node_layout(const std::vector<int>& node_of_rank) {
  if (!node_of_rank.empty() && int(node_of_rank.size()) != P_)
    throw InternalError("dispatcher: a node layout of " + std::to_string(node_of_rank.size()) +
                        " ranks for an EP group of " + std::to_string(P_));
  node_of_expert_.clear();
  for (int e = 0; !node_of_rank.empty() && e < E_; ++e)
    node_of_expert_.push_back(node_of_rank[size_t(owner_of(e))]);
}

template <typename T, typename A>
void Dispatcher<T, A>::allocate(Activations& acts, int max_tokens, int D) {
  const size_t rows = size_t(max_tokens) * K_;
  acts.keep(row_of_slot_, rows);
  if (!parallel()) return;
  // Dropless: in the worst case every peer sends all its rows to this rank.
  const size_t max_recv = rows * P_;
  order_host_.resize(max_recv);
  acts.keep(order_, max_recv);
  acts.keep(inverse_, max_recv);
  acts.take(local_, rows * D, acts.selective_or_full());
  acts.take(out_local_, rows * D, acts.full());
  acts.take(recv_, max_recv * D, acts.selective_or_full());
}

template <typename T, typename A>
void Dispatcher<T, A>::plan(Backend<T, A>& be, const int32_t* expert_idx, int N,
                            int64_t* fanout) {
  // Dispatch phase: the plan, the row moves and the EP all-to-alls.
  PhaseScope phase(be, Phase::Dispatch);
  be.dispatch_plan(row_of_slot_, counts_.data(), expert_idx, N, E_, K_);
  if (fanout && parallel()) {
    // N*K indices to the host (the plan has just waited for its counts
    // there), against the D-wide rows the all-to-all moves for each of them.
    idx_host_.resize(size_t(N) * K_);
    be.to_host(idx_host_.data(), expert_idx, idx_host_.size() * sizeof(int32_t));
    count_fanout(fanout, idx_host_.data(), N, K_, rank_of_expert_);
    if (!node_of_expert_.empty())
      count_fanout(fanout + K_ + 1, idx_host_.data(), N, K_, node_of_expert_);
  }
  offsets_[0] = 0;
  for (int e = 0; e < E_; ++e) offsets_[e + 1] = offsets_[e] + counts_[e];
  const int El = local_experts();
  if (!parallel()) {
    expert_offsets_ = offsets_;
    return;
  }
  // Each peer learns how many rows of each of its experts come from here.
  std::vector<int64_t> per_peer(P_, El), recv_counts(E_);
  ep_->alltoallv(counts_.data(), per_peer.data(), recv_counts.data(), per_peer.data());
  for (int p = 0; p < P_; ++p) {
    send_rows_[p] = offsets_[(p + 1) * El] - offsets_[p * El];
    recv_rows_[p] = 0;
    for (int e = 0; e < El; ++e) recv_rows_[p] += recv_counts[size_t(p) * El + e];
  }
  // Received rows come source-major, each source's rows by local expert;
  // the grouped GEMMs want them expert-major.
  std::vector<int64_t> src_base(P_ + 1, 0);
  for (int p = 0; p < P_; ++p) src_base[p + 1] = src_base[p] + recv_rows_[p];
  const int64_t total = src_base[P_];
  std::vector<int32_t> inverse(static_cast<size_t>(total));
  int64_t i = 0;
  std::vector<int64_t> src_pos(src_base.begin(), src_base.end() - 1);
  for (int e = 0; e < El; ++e) {
    expert_offsets_[e] = i;
    for (int p = 0; p < P_; ++p)
      for (int64_t r = 0; r < recv_counts[size_t(p) * El + e]; ++r, ++i) {
        order_host_[i] = int32_t(src_pos[p]);
        inverse[size_t(src_pos[p]++)] = int32_t(i);
      }
  }
  expert_offsets_[El] = total;
  if (total > 0) {
    be.to_device(order_, order_host_.data(), size_t(total) * sizeof(int32_t));
    be.to_device(inverse_, inverse.data(), size_t(total) * sizeof(int32_t));
  }
}

template <typename T, typename A>
void Dispatcher<T, A>::set_device_comm(Comm* ep_device) {
  if (ep_device && (!ep_ || ep_device->size() != P_ || ep_device->rank() != rank_))
    throw InternalError("dispatcher: the device EP communicator is not this rank's EP group");
  ep_device_ = ep_device;
}

template <typename T, typename A>
void Dispatcher<T, A>::exchange(Backend<T, A>& be, A* recv, const std::vector<int64_t>& recv_counts,
                                const A* send, const std::vector<int64_t>& send_counts) {
  if (ep_device_) {
    be.synchronize();  // the communicator's own stream must see the rows written
    ep_device_->alltoallv(send, send_counts.data(), recv, recv_counts.data());
    return;
  }
  int64_t send_n = 0, recv_n = 0;
  for (int p = 0; p < P_; ++p) send_n += send_counts[p], recv_n += recv_counts[p];
  if (send_host_.size() < size_t(send_n)) send_host_.resize(size_t(send_n));
  if (recv_host_.size() < size_t(recv_n)) recv_host_.resize(size_t(recv_n));
  be.to_host(send_host_.data(), send, size_t(send_n) * sizeof(A));
  ep_->alltoallv(send_host_.data(), send_counts.data(), recv_host_.data(), recv_counts.data());
  be.to_device(recv, recv_host_.data(), size_t(recv_n) * sizeof(A));
}

template <typename T, typename A>
void Dispatcher<T, A>::to_experts(Backend<T, A>& be, A* out, const A* rows_local, int D) {
  std::vector<int64_t> sc(P_), rc(P_);
  for (int p = 0; p < P_; ++p) sc[p] = send_rows_[p] * D, rc[p] = recv_rows_[p] * D;
  exchange(be, recv_, rc, rows_local, sc);
  be.gather_rows(out, recv_, order_, expert_rows(), D);
}

template <typename T, typename A>
void Dispatcher<T, A>::from_experts(Backend<T, A>& be, A* out_local, const A* rows_expert, int D) {
  be.gather_rows(recv_, rows_expert, inverse_, expert_rows(), D);
  std::vector<int64_t> sc(P_), rc(P_);
  for (int p = 0; p < P_; ++p) sc[p] = recv_rows_[p] * D, rc[p] = send_rows_[p] * D;
  exchange(be, out_local, rc, recv_, sc);
}

template <typename T, typename A>
void Dispatcher<T, A>::dispatch(Backend<T, A>& be, A* xe, const A* x, int N, int D) {
  PhaseScope phase(be, Phase::Dispatch);
  if (!parallel()) {
    be.permute_rows(xe, x, row_of_slot_, N, K_, D);
    return;
  }
  be.permute_rows(local_, x, row_of_slot_, N, K_, D);
  to_experts(be, xe, local_, D);
}

template <typename T, typename A>
void Dispatcher<T, A>::dispatch_backward(Backend<T, A>& be, A* dx, const A* dxe, int N, int D) {
  PhaseScope phase(be, Phase::Dispatch);
  if (!parallel()) {
    be.permute_rows_backward(dx, dxe, row_of_slot_, N, K_, D);
    return;
  }
  from_experts(be, local_, dxe, D);
  be.permute_rows_backward(dx, local_, row_of_slot_, N, K_, D);
}

template <typename T, typename A>
const A* Dispatcher<T, A>::gather_outputs(Backend<T, A>& be, const A* ye, int D) {
  if (!parallel()) return ye;
  PhaseScope phase(be, Phase::Dispatch);
  from_experts(be, out_local_, ye, D);
  return out_local_;
}

template <typename T, typename A>
const A* Dispatcher<T, A>::scatter_gradients(Backend<T, A>& be, const A* dy_local, A* dye, int D) {
  if (!parallel()) return dy_local;
  PhaseScope phase(be, Phase::Dispatch);
  to_experts(be, dye, dy_local, D);
  return dye;
}

template <typename T, typename A>
void Dispatcher<T, A>::combine(Backend<T, A>& be, A* y, const A* y_local, const T* gates, int N,
                            int D) const {
  PhaseScope phase(be, Phase::Dispatch);
  be.combine_forward(y, y_local, gates, row_of_slot_, N, K_, D);
}

template <typename T, typename A>
void Dispatcher<T, A>::combine_backward(Backend<T, A>& be, A* dy_local, T* dgates, const A* dy,
                                        const A* y_local, const T* gates, int N, int D) const {
  PhaseScope phase(be, Phase::Dispatch);
  be.combine_backward(dy_local, dgates, dy, y_local, gates, row_of_slot_, N, K_, D);
}

template class Dispatcher<float>;
template class Dispatcher<double>;
template class Dispatcher<float, bf16>;

}  // namespace moe
