#include "cuda_check.h"

#include <string>

#include "core/error.h"

namespace moe {

void cuda_check(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  throw InternalError(std::string(file) + ":" + std::to_string(line) + ": " + expr + ": " +
                      cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

}  // namespace moe
