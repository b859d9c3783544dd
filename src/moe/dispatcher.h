// Token dispatch for a dropless MoE layer: every (token, slot) pair is sent
// to its expert. Rows are first grouped by expert with a stable counting sort
// (deterministic order, so deterministic results). With expert parallelism
// (an EP group of P ranks, each holding E/P consecutive experts) the rows of
// each expert are then exchanged with an all-to-all to the rank that holds
// it, and reordered there expert-major ([local expert][source rank]) for the
// grouped GEMMs; outputs and gradients travel the same way back.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "layers/recompute.h"

namespace moe {

// Rows are activations (A); gates are T.
template <typename T, typename A = T>
class Dispatcher {
 public:
  // ep: the expert-parallel group (null or one rank: all experts are local).
  Dispatcher(int E, int K, Comm* ep);
  // The plan is always kept (a recompute reuses it: no new plan, no counts);
  // the staging rows of expert parallelism are dead after each exchange
  // (redone under selective and full) and the gathered outputs are redone
  // under full.
  void allocate(Activations& acts, int max_tokens, int D);

  int local_experts() const { return E_ / P_; }
  int first_expert() const { return rank_ * local_experts(); }
  // The EP rank that holds `expert`: the placement every plan follows.
  int owner_of(int expert) const { return expert / local_experts(); }

  // An EP communicator over the same ranks that moves backend memory itself
  // (NcclComm on GPUs): the rows' all-to-all then skips the host staging.
  void set_device_comm(Comm* ep_device);

  // The node of each rank of the EP group (node_of_rank[P]): fan-out is then
  // also counted in nodes. Empty (the default): nodes are not counted.
  void set_node_layout(const std::vector<int>& node_of_rank);

  // Plans this micro-batch's routing (expert_idx [N,K]). fanout: if non-null
  // and experts are spread over the EP group, += the tokens' fan-out
  // histograms (moe/fanout.h), [2][K+1]: distinct EP ranks, then distinct
  // nodes (left alone without a node layout).
  void plan(Backend<T, A>& be, const int32_t* expert_idx, int N, int64_t* fanout = nullptr);
  // Tokens of this rank per (global) expert: what balancing counts.
  const std::vector<int64_t>& counts() const { return counts_; }
  // Row offsets of the local experts in the expert-major rows (local_experts()+1).
  const std::vector<int64_t>& expert_offsets() const { return expert_offsets_; }
  int64_t expert_rows() const { return expert_offsets_.back(); }

  // x [N,D] -> xe: the rows of this rank's experts, expert-major.
  void dispatch(Backend<T, A>& be, A* xe, const A* x, int N, int D);
  // dx [N,D] += the gradient of dispatch, from dxe (expert-major).
  void dispatch_backward(Backend<T, A>& be, A* dx, const A* dxe, int N, int D);
  // Expert outputs ye (expert-major) back to this rank's tokens, in local
  // sorted order; returns ye itself when all experts are local.
  const A* gather_outputs(Backend<T, A>& be, const A* ye, int D);
  // Gradient rows in local sorted order -> expert-major on the owners (dye,
  // which only expert parallelism needs: null otherwise); returns dy_local
  // itself when all experts are local.
  const A* scatter_gradients(Backend<T, A>& be, const A* dy_local, A* dye, int D);
  bool parallel() const { return P_ > 1; }

  // y[N, D] += sum_k gate * output row (y_local from gather_outputs).
  void combine(Backend<T, A>& be, A* y, const A* y_local, const T* gates, int N, int D) const;
  // dy_local overwritten, dgates [N, K] overwritten.
  void combine_backward(Backend<T, A>& be, A* dy_local, T* dgates, const A* dy, const A* y_local,
                        const T* gates, int N, int D) const;

 private:
  // Local sorted rows -> expert-major rows on the owners (all-to-all + reorder).
  void to_experts(Backend<T, A>& be, A* out, const A* rows_local, int D);
  // Expert-major rows -> local sorted rows on their source ranks.
  void from_experts(Backend<T, A>& be, A* out_local, const A* rows_expert, int D);
  // The all-to-all of rows: directly in backend memory over the device
  // communicator when there is one; otherwise through host buffers over the
  // EP communicator (MPI, host memory), on the CPU and the GPU alike.
  void exchange(Backend<T, A>& be, A* recv, const std::vector<int64_t>& recv_counts, const A* send,
                const std::vector<int64_t>& send_counts);

  int E_, K_;
  Comm* ep_;
  Comm* ep_device_ = nullptr;  // see set_device_comm
  int P_, rank_;
  std::vector<int64_t> counts_, offsets_;   // per global expert; local sorted row offsets
  std::vector<int64_t> expert_offsets_;     // local experts, expert-major rows
  std::vector<int64_t> send_rows_, recv_rows_;  // rows to / from each peer
  int32_t* row_of_slot_ = nullptr;          // backend [N*K]
  // Expert parallelism only:
  std::vector<int32_t> order_host_;         // expert-major row i = received row order[i]
  int32_t *order_ = nullptr, *inverse_ = nullptr;  // backend copies
  A *local_ = nullptr, *recv_ = nullptr, *out_local_ = nullptr;
  std::vector<A> send_host_, recv_host_;    // staging of exchange(); grow once, then reused
  // Fan-out: the EP rank and the node of each expert; the selection on the host.
  std::vector<int> rank_of_expert_, node_of_expert_;
  std::vector<int32_t> idx_host_;
};

}  // namespace moe
