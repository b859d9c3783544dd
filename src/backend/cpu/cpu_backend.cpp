// make_cpu_backend; the CPU backend's class is cpu_backend.h, its ops the
// family files beside it.
#include <memory>

#include "backend/cpu/cpu_backend.h"

namespace moe {

template <typename T, typename A>
std::unique_ptr<Backend<T, A>> make_cpu_backend(int threads) {
  return std::make_unique<cpu::CpuBackend<T, A>>(threads);
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>(int);
template std::unique_ptr<Backend<double>> make_cpu_backend<double>(int);
template std::unique_ptr<Backend<float, bf16>> make_cpu_backend<float, bf16>(int);

}  // namespace moe
