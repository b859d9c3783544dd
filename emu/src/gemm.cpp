// The shared GEMM of the cuBLAS shims: operands checked against the
// allocation table, op(A) and op(B) packed into fp32 panels, then a
// register tile of independent dot products, each summed in order of k
// (so a result is the plain fp32 loop's, whatever the tile). See gemm.h.
#include "gemm.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu/device.h"

namespace emu::blas {
namespace {

constexpr int64_t kRows = 8;  // rows of op(A) in a register tile
constexpr int64_t kCols = 4;  // columns of op(B) in a register tile
typedef float Lane4 __attribute__((vector_size(kCols * sizeof(float))));

bool known_type(cudaDataType_t t) { return int(t) >= 0 && int(t) <= 33; }

bool known_compute(cublasComputeType_t c) {
  switch (c) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_EMULATED_16BFX9:
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
    case CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT:
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC:
      return true;
  }
  return false;
}

// fp32 with its significand cut to TF32's 10 bits, to nearest even.
float round_tf32(float x) {
  if (!std::isfinite(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u += 0xFFFu + ((u >> 13) & 1u);
  u &= ~0x1FFFu;
  std::memcpy(&x, &u, sizeof u);
  return x;
}

// fp32 rounded to the nearest fp16 value (ties to even), range included.
float round_fp16(float x) {
  if (std::isnan(x)) return x;
  if (std::fabs(x) >= 65520.0f) return std::copysign(INFINITY, x);
  int e = 0;
  std::frexp(x, &e);
  const int quantum_exp = std::max(e - 11, -24);  // below 2^-14: fp16's subnormal step
  return std::ldexp(std::nearbyint(std::ldexp(x, -quantum_exp)), quantum_exp);
}

float round_input(float x, InputRounding r) {
  switch (r) {
    case InputRounding::None:
      return x;
    case InputRounding::Tf32:
      return round_tf32(x);
    case InputRounding::Bf16:
      return float(__nv_bfloat16(x));
    case InputRounding::Fp16:
      return round_fp16(x);
  }
  return x;
}

float load(const Operand& x, int64_t r, int64_t c) {
  const int64_t i = r * x.row_stride + c * x.col_stride;
  if (x.type == CUDA_R_16BF) return float(static_cast<const __nv_bfloat16*>(x.data)[i]);
  return static_cast<const float*>(x.data)[i];
}

// The output's memory is the caller's D (Operand holds it as const).
void store(const Operand& x, int64_t r, int64_t c, float v) {
  const int64_t i = r * x.row_stride + c * x.col_stride;
  if (x.type == CUDA_R_16BF)
    static_cast<__nv_bfloat16*>(const_cast<void*>(x.data))[i] = __nv_bfloat16(v);
  else
    static_cast<float*>(const_cast<void*>(x.data))[i] = v;
}

size_t span_bytes(const Operand& x, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return 0;
  const int64_t last = (rows - 1) * x.row_stride + (cols - 1) * x.col_stride;
  return size_t(last + 1) * element_size(x.type);
}

void check(const Operand& x, int64_t rows, int64_t cols, const std::string& what) {
  const size_t bytes = span_bytes(x, rows, cols);
  if (bytes == 0) return;
  const size_t align = element_size(x.type);
  if (reinterpret_cast<uintptr_t>(x.data) % align != 0) {
    char p[32];
    std::snprintf(p, sizeof p, "%p", x.data);
    throw KernelError(what + ": " + p + " is not aligned to its " + std::to_string(align) + "-byte elements");
  }
  check_device_range(x.data, bytes, what.c_str());
}

// Panels of kRows rows of op(A) (or kCols columns of op(B)), each element k
// of the panel's lines side by side; lines past the matrix are zeros.
std::vector<float> pack_rows(const Operand& a, int64_t m, int64_t k, InputRounding r) {
  const int64_t panels = (m + kRows - 1) / kRows;
  std::vector<float> out(size_t(panels * kRows * k), 0.0f);
  for (int64_t i = 0; i < m; ++i) {
    float* panel = out.data() + (i / kRows) * kRows * k + i % kRows;
    for (int64_t l = 0; l < k; ++l) panel[l * kRows] = round_input(load(a, i, l), r);
  }
  return out;
}

std::vector<float> pack_cols(const Operand& b, int64_t k, int64_t n, InputRounding r) {
  const int64_t panels = (n + kCols - 1) / kCols;
  std::vector<float> out(size_t(panels * kCols * k), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    float* panel = out.data() + (j / kCols) * kCols * k + j % kCols;
    for (int64_t l = 0; l < k; ++l) panel[l * kCols] = round_input(load(b, l, j), r);
  }
  return out;
}

// acc[r][c] = sum over l, in order, of a_panel(r, l) * b_panel(l, c).
void tile(const float* a_panel, const float* b_panel, int64_t k, Lane4 acc[kRows]) {
  for (int64_t r = 0; r < kRows; ++r) acc[r] = Lane4{};
  for (int64_t l = 0; l < k; ++l) {
    Lane4 b;
    std::memcpy(&b, b_panel + l * kCols, sizeof b);
    const float* a = a_panel + l * kRows;
    for (int64_t r = 0; r < kRows; ++r) acc[r] += a[r] * b;
  }
}

}  // namespace

size_t element_size(cudaDataType_t type) {
  switch (type) {
    case CUDA_R_32F:
      return 4;
    case CUDA_R_16BF:
      return 2;
    default:
      return 0;
  }
}

TypeCheck check_types(cublasComputeType_t compute, cudaDataType_t scale, cudaDataType_t a, cudaDataType_t b,
                      cudaDataType_t c, bool grouped) {
  if (!known_compute(compute) || !known_type(scale) || !known_type(a) || !known_type(b) || !known_type(c))
    return TypeCheck::kUnknown;
  if (a != b || scale != CUDA_R_32F) return TypeCheck::kUnsupported;
  const bool f32 = a == CUDA_R_32F && c == CUDA_R_32F;
  const bool bf16_bf16 = a == CUDA_R_16BF && c == CUDA_R_16BF;
  const bool bf16_f32 = a == CUDA_R_16BF && c == CUDA_R_32F;
  bool ok = false;
  if (grouped) {
    ok = (compute == CUBLAS_COMPUTE_32F && (f32 || bf16_bf16)) ||
         (compute == CUBLAS_COMPUTE_32F_FAST_TF32 && f32);
  } else {
    switch (compute) {
      case CUBLAS_COMPUTE_32F:
      case CUBLAS_COMPUTE_32F_PEDANTIC:
        ok = f32 || bf16_bf16 || bf16_f32;
        break;
      case CUBLAS_COMPUTE_32F_FAST_16F:
      case CUBLAS_COMPUTE_32F_FAST_16BF:
      case CUBLAS_COMPUTE_32F_FAST_TF32:
      case CUBLAS_COMPUTE_32F_EMULATED_16BFX9:
        ok = f32;
        break;
      default:
        ok = false;  // 16F, 64F and integer compute: not emulated
    }
  }
  return ok ? TypeCheck::kOk : TypeCheck::kUnsupported;
}

const char* type_name(cudaDataType_t type) {
  switch (type) {
    case CUDA_R_32F:
      return "CUDA_R_32F";
    case CUDA_R_64F:
      return "CUDA_R_64F";
    case CUDA_R_16F:
      return "CUDA_R_16F";
    case CUDA_R_16BF:
      return "CUDA_R_16BF";
    default:
      return "another cudaDataType";
  }
}

const char* compute_name(cublasComputeType_t compute) {
  switch (compute) {
    case CUBLAS_COMPUTE_32F:
      return "CUBLAS_COMPUTE_32F";
    case CUBLAS_COMPUTE_32F_PEDANTIC:
      return "CUBLAS_COMPUTE_32F_PEDANTIC";
    case CUBLAS_COMPUTE_32F_FAST_16F:
      return "CUBLAS_COMPUTE_32F_FAST_16F";
    case CUBLAS_COMPUTE_32F_FAST_16BF:
      return "CUBLAS_COMPUTE_32F_FAST_16BF";
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      return "CUBLAS_COMPUTE_32F_FAST_TF32";
    default:
      return "another cublasComputeType";
  }
}

InputRounding rounding_for(cublasComputeType_t compute, cudaDataType_t input, cublasMath_t math) {
  if (input != CUDA_R_32F) return InputRounding::None;  // bf16 widens to fp32 exactly
  switch (compute) {
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      return InputRounding::Tf32;
    case CUBLAS_COMPUTE_32F_FAST_16BF:
      return InputRounding::Bf16;
    case CUBLAS_COMPUTE_32F_FAST_16F:
      return InputRounding::Fp16;
    case CUBLAS_COMPUTE_32F:
      return (math & 0xF) == CUBLAS_TF32_TENSOR_OP_MATH ? InputRounding::Tf32 : InputRounding::None;
    default:
      return InputRounding::None;
  }
}

void run(const Problem& p, const std::string& where) {
  if (p.m == 0 || p.n == 0) return;
  const bool reads_ab = p.k > 0 && p.alpha != 0.0f;
  const bool reads_c = p.beta != 0.0f;
  const bool d_is_c = p.d.data == p.c.data;
  if (reads_ab) {
    check(p.a, p.m, p.k, where + " A");
    check(p.b, p.k, p.n, where + " B");
  }
  if (reads_c) check(p.c, p.m, p.n, where + " C");
  check(p.d, p.m, p.n, where + (d_is_c ? " C" : " D"));

  // beta * C alone: k == 0 or alpha == 0 (A and B not referenced).
  auto finish = [&](int64_t i, int64_t j, float product_sum) {
    float v = reads_ab ? p.alpha * product_sum : 0.0f;
    if (reads_c) v += p.beta * load(p.c, i, j);
    store(p.d, i, j, v);
  };
  if (!reads_ab) {
    for (int64_t j = 0; j < p.n; ++j)
      for (int64_t i = 0; i < p.m; ++i) finish(i, j, 0.0f);
    return;
  }
  // All of op(A) packed once; op(B) one panel of columns at a time.
  const std::vector<float> a_panels = pack_rows(p.a, p.m, p.k, p.rounding);
  for (int64_t j0 = 0; j0 < p.n; j0 += kCols) {
    const int64_t cols = std::min(kCols, p.n - j0);
    Operand b_part = p.b;
    b_part.data = static_cast<const char*>(p.b.data) + j0 * p.b.col_stride * int64_t(element_size(p.b.type));
    const std::vector<float> b_panel = pack_cols(b_part, p.k, cols, p.rounding);
    for (int64_t i0 = 0; i0 < p.m; i0 += kRows) {
      Lane4 acc[kRows];
      tile(a_panels.data() + (i0 / kRows) * kRows * p.k, b_panel.data(), p.k, acc);
      const int64_t rows = std::min(kRows, p.m - i0);
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < rows; ++r) finish(i0 + r, j0 + c, acc[r][c]);
    }
  }
}

}  // namespace emu::blas
