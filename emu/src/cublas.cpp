// cuBLAS on the emulated device: the handle, its stream and modes, and the
// GEMM routines of cublas_api.h. Arguments are checked as the cuBLAS
// documentation lists them (CUBLAS_STATUS_NOT_INITIALIZED for a handle
// cublasCreate did not make, INVALID_VALUE for a bad dimension, leading
// dimension or enum, NOT_SUPPORTED for a type combination not emulated);
// host-side scalars and per-group arrays are copied at the call; the
// product runs on the handle's stream, where device memory (matrices,
// device pointer arrays, device-mode scalars) is checked and read.
#include <cublas_v2.h>

#include <cstdio>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "emu/device.h"
#include "gemm.h"

struct cublasContext {
  cudaStream_t stream = nullptr;  // the legacy default stream
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

namespace {

using emu::blas::Operand;
using emu::blas::Problem;

std::mutex registry_mu;
std::set<cublasHandle_t>& live_handles() {
  static auto* handles = new std::set<cublasHandle_t>;  // never destroyed, as the device
  return *handles;
}

bool valid(cublasHandle_t h) {
  std::lock_guard lock(registry_mu);
  return h && live_handles().count(h);
}

cublasStatus_t fail(cublasStatus_t status, const std::string& why) {
  std::fprintf(stderr, "emu: %s (%s)\n", why.c_str(), cublasGetStatusName(status));
  return status;
}

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

bool valid_algo(cublasGemmAlgo_t algo) {
  const int a = algo;
  return a == -1 || (a >= 0 && a <= 23) || (a >= 99 && a <= 115) || a == 999;
}

// The documented limits on one GEMM's shape; "" when they hold.
std::string shape_problem(cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, int lda,
                          int ldb, int ldc) {
  auto s = [](int v) { return std::to_string(v); };
  if (!valid_op(transa) || !valid_op(transb)) return "transa or transb is not CUBLAS_OP_N, _T or _C";
  if (m < 0 || n < 0 || k < 0) return "m = " + s(m) + ", n = " + s(n) + ", k = " + s(k) + ": negative";
  const int a_rows = transa == CUBLAS_OP_N ? m : k;
  const int b_rows = transb == CUBLAS_OP_N ? k : n;
  if (lda < std::max(1, a_rows)) return "lda = " + s(lda) + " < max(1, " + s(a_rows) + ")";
  if (ldb < std::max(1, b_rows)) return "ldb = " + s(ldb) + " < max(1, " + s(b_rows) + ")";
  if (ldc < std::max(1, m)) return "ldc = " + s(ldc) + " < max(1, m = " + s(m) + ")";
  return "";
}

// op(X) of a column-major X with leading dimension ld.
Operand operand(const void* data, cudaDataType_t type, cublasOperation_t op, int ld) {
  Operand x;
  x.data = data;
  x.type = type;
  x.row_stride = op == CUBLAS_OP_N ? 1 : ld;
  x.col_stride = op == CUBLAS_OP_N ? ld : 1;
  return x;
}

cublasStatus_t type_status(cublasComputeType_t compute, cudaDataType_t a, cudaDataType_t b, cudaDataType_t c,
                           bool grouped, const std::string& api) {
  using emu::blas::TypeCheck;
  const TypeCheck t = emu::blas::check_types(compute, CUDA_R_32F, a, b, c, grouped);
  if (t == TypeCheck::kOk) return CUBLAS_STATUS_SUCCESS;
  const std::string what = std::string(emu::blas::type_name(a)) + " x " + emu::blas::type_name(b) + " -> " +
                           emu::blas::type_name(c) + " with " + emu::blas::compute_name(compute);
  if (t == TypeCheck::kUnknown)
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": a type or compute type that does not exist");
  return fail(CUBLAS_STATUS_NOT_SUPPORTED,
              api + ": " + what + " is not a supported combination (or not emulated)");
}

// alpha and beta: copied at the call (pointer mode host) or read from
// device memory when the stream reaches the operation (pointer mode device).
struct Scalars {
  bool on_device = false;
  float alpha = 0.0f, beta = 0.0f;
  const float* device_alpha = nullptr;
  const float* device_beta = nullptr;

  void apply(Problem& p, const std::string& where) const {
    if (!on_device) {
      p.alpha = alpha;
      p.beta = beta;
      return;
    }
    emu::check_device_range(device_alpha, sizeof(float), (where + " alpha").c_str());
    emu::check_device_range(device_beta, sizeof(float), (where + " beta").c_str());
    p.alpha = *device_alpha;
    p.beta = *device_beta;
  }
};

Scalars scalars(cublasHandle_t h, const void* alpha, const void* beta) {
  Scalars s;
  s.on_device = h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  if (s.on_device) {
    s.device_alpha = static_cast<const float*>(alpha);
    s.device_beta = static_cast<const float*>(beta);
  } else {
    s.alpha = *static_cast<const float*>(alpha);
    s.beta = *static_cast<const float*>(beta);
  }
  return s;
}

cublasStatus_t submit(cublasHandle_t h, const std::string& api, std::function<void()> fn) {
  const cudaError_t e = emu::enqueue(h->stream, api, std::move(fn));
  if (e != cudaSuccess)
    return fail(CUBLAS_STATUS_EXECUTION_FAILED, api + ": not queued: " + cudaGetErrorName(e));
  return CUBLAS_STATUS_SUCCESS;
}

// A device array of `count` device pointers, checked when the stream reaches it.
const void* const* device_array(const void* const* array, int64_t count, const std::string& what) {
  emu::check_device_range(array, size_t(count) * sizeof(void*), what.c_str());
  return array;
}

// The checks every GEMM entry point shares; SUCCESS when the call may go on.
cublasStatus_t check_call(cublasHandle_t h, const std::string& api, cublasOperation_t transa,
                          cublasOperation_t transb, int m, int n, int k, const void* alpha,
                          cudaDataType a_type, int lda, cudaDataType b_type, int ldb, const void* beta,
                          cudaDataType c_type, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  if (!valid(h)) return fail(CUBLAS_STATUS_NOT_INITIALIZED, api + ": not a handle from cublasCreate");
  if (std::string w = shape_problem(transa, transb, m, n, k, lda, ldb, ldc); !w.empty())
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": " + w);
  if (!valid_algo(algo))
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": algo " + std::to_string(algo) + " does not exist");
  if (!alpha || !beta) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": alpha or beta is null");
  return type_status(compute, a_type, b_type, c_type, false, api);
}

Problem problem(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                cudaDataType a_type, int lda, cudaDataType b_type, int ldb, cudaDataType c_type, int ldc,
                cublasComputeType_t compute) {
  Problem p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.a = operand(nullptr, a_type, transa, lda);
  p.b = operand(nullptr, b_type, transb, ldb);
  p.c = operand(nullptr, c_type, CUBLAS_OP_N, ldc);
  p.d = p.c;
  p.rounding = emu::blas::rounding_for(compute, a_type, h->math);
  return p;
}

}  // namespace

// ----------------------------------------------------------------- helpers --

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate: handle is null");
  *handle = new cublasContext;
  std::lock_guard lock(registry_mu);
  live_handles().insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}

// As documented, releasing the handle synchronises the device.
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  {
    std::lock_guard lock(registry_mu);
    if (!handle || !live_handles().erase(handle))
      return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy: not a handle from cublasCreate");
  }
  delete handle;
  emu::drain();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetVersion_v2(cublasHandle_t handle, int* version) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetVersion: not a handle from cublasCreate");
  if (!version) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetVersion: version is null");
  *version = CUBLAS_VERSION;
  return CUBLAS_STATUS_SUCCESS;
}

// The emulated GEMM needs no workspace; the pointer is kept, and must be
// 256-byte aligned as documented.
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t workspaceSizeInBytes) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetWorkspace: not a handle from cublasCreate");
  if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetWorkspace: workspace not aligned to 256 bytes");
  handle->workspace = workspace;
  handle->workspace_bytes = workspaceSizeInBytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream: not a handle from cublasCreate");
  handle->stream = streamId;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetStream: not a handle from cublasCreate");
  if (!streamId) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetStream: streamId is null");
  *streamId = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetPointerMode: not a handle from cublasCreate");
  if (!mode) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetPointerMode: mode is null");
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetPointerMode: not a handle from cublasCreate");
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetPointerMode: no such mode");
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetMathMode: not a handle from cublasCreate");
  if (!mode) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetMathMode: mode is null");
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

// A mode is one of the base modes, optionally with
// CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION.
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!valid(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode: not a handle from cublasCreate");
  const int base = mode & ~int(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  if (base != 0 && base != 1 && base != 2 && base != 3 && base != 4 && base != 8)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode: no such mode " + std::to_string(int(mode)));
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "error detected trying to check the license";
  }
  return "unknown error";
}

// -------------------------------------------------------------------- GEMM --

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                              int m, int n, int k, const float* alpha, const float* A, int lda,
                              const float* B, int ldb, const float* beta, float* C, int ldc) {
  const std::string api = "cublasSgemm";
  if (cublasStatus_t s = check_call(handle, api, transa, transb, m, n, k, alpha, CUDA_R_32F, lda, CUDA_R_32F,
                                    ldb, beta, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      s != CUBLAS_STATUS_SUCCESS)
    return s;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const cublasComputeType_t compute =
      (handle->math & 0xF) == CUBLAS_PEDANTIC_MATH ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  Problem p =
      problem(handle, transa, transb, m, n, k, CUDA_R_32F, lda, CUDA_R_32F, ldb, CUDA_R_32F, ldc, compute);
  p.a.data = A;
  p.b.data = B;
  p.c.data = p.d.data = C;
  const Scalars s = scalars(handle, alpha, beta);
  return submit(handle, api, [p, s, api]() mutable {
    s.apply(p, api);
    emu::blas::run(p, api);
  });
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                            int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                            const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
  const std::string api = "cublasGemmEx";
  if (cublasStatus_t s = check_call(handle, api, transa, transb, m, n, k, alpha, Atype, lda, Btype, ldb, beta,
                                    Ctype, ldc, computeType, algo);
      s != CUBLAS_STATUS_SUCCESS)
    return s;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  Problem p = problem(handle, transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype, ldc, computeType);
  p.a.data = A;
  p.b.data = B;
  p.c.data = p.d.data = C;
  const Scalars s = scalars(handle, alpha, beta);
  return submit(handle, api, [p, s, api]() mutable {
    s.apply(p, api);
    emu::blas::run(p, api);
  });
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                   int m, int n, int k, const void* alpha, const void* const Aarray[],
                                   cudaDataType Atype, int lda, const void* const Barray[],
                                   cudaDataType Btype, int ldb, const void* beta, void* const Carray[],
                                   cudaDataType Ctype, int ldc, int batchCount,
                                   cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  const std::string api = "cublasGemmBatchedEx";
  if (cublasStatus_t s = check_call(handle, api, transa, transb, m, n, k, alpha, Atype, lda, Btype, ldb, beta,
                                    Ctype, ldc, computeType, algo);
      s != CUBLAS_STATUS_SUCCESS)
    return s;
  if (batchCount < 0) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": batchCount < 0");
  if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
  const Problem shape =
      problem(handle, transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype, ldc, computeType);
  const Scalars s = scalars(handle, alpha, beta);
  return submit(handle, api, [=] {
    const auto* a = device_array(Aarray, batchCount, api + " Aarray");
    const auto* b = device_array(Barray, batchCount, api + " Barray");
    const auto* c = device_array(const_cast<const void* const*>(Carray), batchCount, api + " Carray");
    for (int i = 0; i < batchCount; ++i) {
      Problem p = shape;
      const std::string where = api + " problem " + std::to_string(i);
      s.apply(p, where);
      p.a.data = a[i];
      p.b.data = b[i];
      p.c.data = p.d.data = c[i];
      emu::blas::run(p, where);
    }
  });
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k, const void* alpha,
                                          const void* A, cudaDataType Atype, int lda, long long int strideA,
                                          const void* B, cudaDataType Btype, int ldb, long long int strideB,
                                          const void* beta, void* C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  const std::string api = "cublasGemmStridedBatchedEx";
  if (cublasStatus_t s = check_call(handle, api, transa, transb, m, n, k, alpha, Atype, lda, Btype, ldb, beta,
                                    Ctype, ldc, computeType, algo);
      s != CUBLAS_STATUS_SUCCESS)
    return s;
  if (batchCount < 0) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": batchCount < 0");
  if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
  const Problem shape =
      problem(handle, transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype, ldc, computeType);
  const Scalars s = scalars(handle, alpha, beta);
  // Byte offsets: a stride counts elements of the matrix's own type.
  auto at = [](const void* base, long long stride, cudaDataType type, int i) {
    return static_cast<const char*>(base) + stride * i * int64_t(emu::blas::element_size(type));
  };
  return submit(handle, api, [=] {
    for (int i = 0; i < batchCount; ++i) {
      Problem p = shape;
      const std::string where = api + " batch " + std::to_string(i);
      s.apply(p, where);
      p.a.data = at(A, strideA, Atype, i);
      p.b.data = at(B, strideB, Btype, i);
      p.c.data = p.d.data = at(C, strideC, Ctype, i);
      emu::blas::run(p, where);
    }
  });
}

cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void* alpha_array,
                                          const void* const Aarray[], cudaDataType_t Atype,
                                          const int lda_array[], const void* const Barray[],
                                          cudaDataType_t Btype, const int ldb_array[], const void* beta_array,
                                          void* const Carray[], cudaDataType_t Ctype, const int ldc_array[],
                                          int group_count, const int group_size[],
                                          cublasComputeType_t computeType) {
  const std::string api = "cublasGemmGroupedBatchedEx";
  if (!valid(handle)) return fail(CUBLAS_STATUS_NOT_INITIALIZED, api + ": not a handle from cublasCreate");
  if (group_count < 0) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": group_count < 0");
  if (group_count == 0) return CUBLAS_STATUS_SUCCESS;
  if (!transa_array || !transb_array || !m_array || !n_array || !k_array || !alpha_array || !lda_array ||
      !ldb_array || !beta_array || !ldc_array || !group_size)
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": a per-group host array is null");
  if (handle->pointer_mode != CUBLAS_POINTER_MODE_HOST)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, api + ": alpha_array and beta_array must be host memory");
  if (cublasStatus_t s = type_status(computeType, Atype, Btype, Ctype, true, api); s != CUBLAS_STATUS_SUCCESS)
    return s;
  // The host arrays are read now; the caller may free them on return.
  std::vector<Problem> groups;
  std::vector<int> sizes;
  int64_t problems = 0;
  for (int g = 0; g < group_count; ++g) {
    if (std::string w = shape_problem(transa_array[g], transb_array[g], m_array[g], n_array[g], k_array[g],
                                      lda_array[g], ldb_array[g], ldc_array[g]);
        !w.empty())
      return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": group " + std::to_string(g) + ": " + w);
    if (group_size[g] < 0)
      return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": group_size[" + std::to_string(g) + "] < 0");
    Problem p = problem(handle, transa_array[g], transb_array[g], m_array[g], n_array[g], k_array[g], Atype,
                        lda_array[g], Btype, ldb_array[g], Ctype, ldc_array[g], computeType);
    p.alpha = static_cast<const float*>(alpha_array)[g];
    p.beta = static_cast<const float*>(beta_array)[g];
    groups.push_back(p);
    sizes.push_back(group_size[g]);
    problems += group_size[g];
  }
  if (problems == 0) return CUBLAS_STATUS_SUCCESS;
  return submit(handle, api, [=] {
    const auto* a = device_array(Aarray, problems, api + " Aarray");
    const auto* b = device_array(Barray, problems, api + " Barray");
    const auto* c = device_array(const_cast<const void* const*>(Carray), problems, api + " Carray");
    int64_t index = 0;
    for (size_t g = 0; g < groups.size(); ++g)
      for (int j = 0; j < sizes[g]; ++j, ++index) {
        Problem p = groups[g];
        p.a.data = a[index];
        p.b.data = b[index];
        p.c.data = p.d.data = c[index];
        emu::blas::run(p, api + " group " + std::to_string(g) + " problem " + std::to_string(index));
      }
  });
}
