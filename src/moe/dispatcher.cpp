#include "moe/dispatcher.h"

namespace moe {

template <typename T>
void Dispatcher<T>::allocate(Arena<T>& arena, int max_tokens) {
  row_of_slot_ = arena.template alloc<int32_t>(size_t(max_tokens) * K_);
}

template <typename T>
void Dispatcher<T>::plan(Backend<T>& be, const int32_t* expert_idx, int N) {
  be.dispatch_plan(row_of_slot_, counts_.data(), expert_idx, N, E_, K_);
  offsets_[0] = 0;
  for (int e = 0; e < E_; ++e) offsets_[e + 1] = offsets_[e] + counts_[e];
}

template <typename T>
void Dispatcher<T>::dispatch(Backend<T>& be, T* xp, const T* x, int N, int D) const {
  be.permute_rows(xp, x, row_of_slot_, N, K_, D);
}

template <typename T>
void Dispatcher<T>::dispatch_backward(Backend<T>& be, T* dx, const T* dxp, int N, int D) const {
  be.permute_rows_backward(dx, dxp, row_of_slot_, N, K_, D);
}

template <typename T>
void Dispatcher<T>::combine(Backend<T>& be, T* y, const T* yp, const T* gates, int N,
                            int D) const {
  be.combine_forward(y, yp, gates, row_of_slot_, N, K_, D);
}

template <typename T>
void Dispatcher<T>::combine_backward(Backend<T>& be, T* dyp, T* dgates, const T* dy, const T* yp,
                                     const T* gates, int N, int D) const {
  be.combine_backward(dyp, dgates, dy, yp, gates, row_of_slot_, N, K_, D);
}

template class Dispatcher<float>;
template class Dispatcher<double>;

}  // namespace moe
