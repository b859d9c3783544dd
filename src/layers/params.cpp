#include "layers/params.h"

#include "core/error.h"
#include "core/philox.h"

namespace moe {

template <typename T>
typename ParamSet<T>::Id ParamSet<T>::add(const std::string& name, std::vector<int64_t> shape,
                                          ParamInit init, bool decay, bool expert) {
  MOE_CHECK(!expert || decay, "expert weights are matrices: they take weight decay");
  MOE_CHECK(be_ == nullptr, "ParamSet::add after finalize");
  ParamInfo p;
  p.name = name;
  p.numel = 1;
  for (int64_t d : shape) p.numel *= size_t(d);
  p.shape = std::move(shape);
  p.init = init;
  p.decay = decay;
  p.expert = expert;
  info_.push_back(std::move(p));
  return Id(info_.size() - 1);
}

template <typename T>
typename ParamSet<T>::Id ParamSet<T>::find(const std::string& name) const {
  for (size_t i = 0; i < info_.size(); ++i)
    if (info_[i].name == name) return Id(i);
  throw InternalError("no parameter named " + name);
}

template <typename T>
void ParamSet<T>::finalize(BackendBase& be) {
  MOE_CHECK(be_ == nullptr, "ParamSet::finalize called twice");
  be_ = &be;
  size_t off = 0;
  auto place = [&](auto&& belongs) {
    for (auto& p : info_)
      if (belongs(p)) {
        p.offset = off;
        off += p.numel;
      }
  };
  place([](const ParamInfo& p) { return p.expert; });
  n_expert_ = off;
  place([](const ParamInfo& p) { return p.decay && !p.expert; });
  n_decay_ = off;
  place([](const ParamInfo& p) { return !p.decay; });
  total_ = off;
  params_ = alloc_array<T>(be, total_);
  grads_ = alloc_array<T>(be, total_);
}

template <typename T>
ParamSet<T>::~ParamSet() {
  if (!be_) return;
  for (T* p : {params_, grads_}) be_->free_bytes(p);
}

template <typename T>
void ParamSet<T>::init(uint64_t seed, double std) {
  std::vector<T> host(total_);
  for (const auto& p : info_) {
    const uint64_t stream = stable_hash(p.name);
    T* out = host.data() + p.offset;
    // Every value is a pure function of (seed, name, index): the threads
    // change nothing but the time (the 1B model draws 947M normals).
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < p.numel; ++i) {
      T v = 0;
      if (p.init == ParamInit::Normal) v = T(std * philox_normal(seed, stream, i));
      if (p.init == ParamInit::Ones) v = T(1);
      out[i] = v;
    }
  }
  params_from_host(host);
}

template <typename T>
void ParamSet<T>::zero_grads() {
  be_->zero(grads_, total_ * sizeof(T));
}

template <typename T>
std::vector<T> ParamSet<T>::params_to_host() const {
  std::vector<T> h(total_);
  be_->to_host(h.data(), params_, total_ * sizeof(T));
  return h;
}

template <typename T>
void ParamSet<T>::params_from_host(const std::vector<T>& host) {
  MOE_CHECK(host.size() == total_, "params_from_host: size mismatch");
  be_->to_device(params_, host.data(), total_ * sizeof(T));
}

template <typename T>
std::vector<T> ParamSet<T>::grads_to_host() const {
  std::vector<T> h(total_);
  be_->to_host(h.data(), grads_, total_ * sizeof(T));
  return h;
}

template class ParamSet<float>;
template class ParamSet<double>;

}  // namespace moe
