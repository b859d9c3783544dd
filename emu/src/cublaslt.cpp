// cuBLASLt on the emulated device: descriptors kept inside the toolkit's
// semi-opaque structs, a heuristic that offers one algorithm per supported
// problem, and cublasLtMatmul, which runs the shared GEMM (gemm.h) on the
// given stream. The algorithm remembers the pointer alignment the search
// preference promised (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES, 256 by
// default as documented), and every cublasLtMatmul with it checks that A,
// B, C and D keep that promise: a kernel chosen for 16-byte loads cannot
// take a pointer 4 bytes off.
#include <cublasLt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "emu/blas.h"
#include "emu/device.h"
#include "gemm.h"

struct cublasLtContext {};

namespace {

using emu::blas::Operand;
using emu::blas::Problem;

// Marks a descriptor as made by its Create/Init (and not destroyed since).
constexpr uint32_t kLayoutTag = 0x6c61796f;
constexpr uint32_t kDescTag = 0x64657363;
constexpr uint32_t kPrefTag = 0x70726566;
constexpr uint32_t kAlgoTag = 0x616c676f;
constexpr uint32_t kDefaultAlignment = 256;

struct Layout {
  uint32_t tag = kLayoutTag;
  uint32_t type = CUDA_R_32F;
  int32_t order = CUBLASLT_ORDER_COL;
  int32_t batch_count = 1;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
  int64_t batch_stride = 0;  // elements
  int64_t plane_offset = 0;
  uint32_t batch_mode = CUBLASLT_BATCH_MODE_STRIDED;
};

struct Desc {
  uint32_t tag = kDescTag;
  int32_t compute = CUBLAS_COMPUTE_32F;
  int32_t scale = CUDA_R_32F;
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N, transc = CUBLAS_OP_N;
  int32_t fill_mode = CUBLAS_FILL_MODE_FULL;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* bias = nullptr;
  int32_t bias_type = -1;
};

struct Pref {
  uint32_t tag = kPrefTag;
  uint32_t search_mode = CUBLASLT_SEARCH_BEST_FIT;
  uint64_t max_workspace = 0;
  uint32_t reduction_mask = 0xFFFFFFFFu;
  uint32_t alignment[4] = {kDefaultAlignment, kDefaultAlignment, kDefaultAlignment,
                           kDefaultAlignment};  // A B C D
  float max_waves = 0.0f;
  uint64_t impl_mask = ~uint64_t(0);
};

// What an algorithm from the heuristic promises: the alignments of A, B, C, D.
struct Algo {
  uint32_t tag = kAlgoTag;
  uint32_t alignment[4] = {kDefaultAlignment, kDefaultAlignment, kDefaultAlignment, kDefaultAlignment};
};

static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t));
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t));
static_assert(sizeof(Pref) <= sizeof(cublasLtMatmulPreferenceOpaque_t));
static_assert(sizeof(Algo) <= sizeof(cublasLtMatmulAlgo_t));

template <class T, class Opaque>
T load(const Opaque* o) {
  T t;
  std::memcpy(&t, o->data, sizeof t);
  return t;
}
template <class T, class Opaque>
void save(Opaque* o, const T& t) {
  std::memset(o->data, 0, sizeof o->data);
  std::memcpy(o->data, &t, sizeof t);
}
template <class T, class Opaque>
bool live(const Opaque* o) {
  return o && load<T>(o).tag == T{}.tag;
}

std::mutex registry_mu;
std::set<cublasLtHandle_t>& live_handles() {
  static auto* handles = new std::set<cublasLtHandle_t>;
  return *handles;
}
bool valid(cublasLtHandle_t h) {
  std::lock_guard lock(registry_mu);
  return h && live_handles().count(h);
}

cublasStatus_t fail(cublasStatus_t status, const std::string& why) {
  std::fprintf(stderr, "emu: %s (%s)\n", why.c_str(), cublasGetStatusName(status));
  return status;
}

// An attribute's bytes inside a descriptor: {address, size}, {nullptr, 0}
// for one the emulator does not model.
using Field = std::pair<void*, size_t>;
template <class T>
Field field(T& member) {
  return {&member, sizeof member};
}

Field layout_field(Layout& l, cublasLtMatrixLayoutAttribute_t attr) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE:
      return field(l.type);
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
      return field(l.order);
    case CUBLASLT_MATRIX_LAYOUT_ROWS:
      return field(l.rows);
    case CUBLASLT_MATRIX_LAYOUT_COLS:
      return field(l.cols);
    case CUBLASLT_MATRIX_LAYOUT_LD:
      return field(l.ld);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      return field(l.batch_count);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return field(l.batch_stride);
    case CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET:
      return field(l.plane_offset);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_MODE:
      return field(l.batch_mode);
  }
  return {nullptr, 0};
}

Field desc_field(Desc& d, cublasLtMatmulDescAttributes_t attr) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
      return field(d.compute);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
      return field(d.scale);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
      return field(d.pointer_mode);
    case CUBLASLT_MATMUL_DESC_TRANSA:
      return field(d.transa);
    case CUBLASLT_MATMUL_DESC_TRANSB:
      return field(d.transb);
    case CUBLASLT_MATMUL_DESC_TRANSC:
      return field(d.transc);
    case CUBLASLT_MATMUL_DESC_FILL_MODE:
      return field(d.fill_mode);
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      return field(d.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return field(d.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      return field(d.bias_type);
    default:
      return {nullptr, 0};
  }
}

Field pref_field(Pref& p, cublasLtMatmulPreferenceAttributes_t attr) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
      return field(p.search_mode);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return field(p.max_workspace);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      return field(p.reduction_mask);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      return field(p.alignment[0]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      return field(p.alignment[1]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      return field(p.alignment[2]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return field(p.alignment[3]);
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT:
      return field(p.max_waves);
    case CUBLASLT_MATMUL_PREF_IMPL_MASK:
      return field(p.impl_mask);
  }
  return {nullptr, 0};
}

// Set/GetAttribute of any descriptor, as documented: the buffer's size
// must be the attribute's; a Get with size 0 reports the size needed.
template <class T, class Opaque, class FieldOf, class Attr>
cublasStatus_t set_attribute(Opaque* o, Attr attr, const void* buf, size_t size, FieldOf field_of,
                             const std::string& api) {
  if (!live<T>(o)) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": not a created descriptor");
  T t = load<T>(o);
  const Field f = field_of(t, attr);
  if (!f.first)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                api + ": attribute " + std::to_string(int(attr)) + " is not emulated");
  if (!buf || size != f.second)
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": attribute " + std::to_string(int(attr)) + " takes " +
                                                 std::to_string(f.second) + " bytes, not " +
                                                 std::to_string(size));
  std::memcpy(f.first, buf, f.second);
  save(o, t);
  return CUBLAS_STATUS_SUCCESS;
}

template <class T, class Opaque, class FieldOf, class Attr>
cublasStatus_t get_attribute(Opaque* o, Attr attr, void* buf, size_t size, size_t* written, FieldOf field_of,
                             const std::string& api) {
  if (!live<T>(o)) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": not a created descriptor");
  T t = load<T>(o);
  const Field f = field_of(t, attr);
  if (!f.first)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                api + ": attribute " + std::to_string(int(attr)) + " is not emulated");
  if (size == 0) {
    if (!written)
      return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": sizeInBytes is 0 and sizeWritten is null");
    *written = f.second;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (!buf || size != f.second)
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": buffer size is not the attribute's");
  std::memcpy(buf, f.first, f.second);
  if (written) *written = f.second;
  return CUBLAS_STATUS_SUCCESS;
}

// What the heuristic and cublasLtMatmul both derive from the descriptors.
struct Plan {
  Problem shape;  // dimensions, strides, types; no data yet
  int batch = 1;
  int64_t stride[4]{};  // batch strides of A, B, C, D in elements
};

// The stored matrix's element (r, c) offset: column- or row-major.
Operand stored(const Layout& l, bool transposed) {
  Operand x;
  x.type = cudaDataType_t(l.type);
  const bool col = l.order == CUBLASLT_ORDER_COL;
  int64_t rs = col ? 1 : l.ld, cs = col ? l.ld : 1;
  if (transposed) std::swap(rs, cs);
  x.row_stride = rs;
  x.col_stride = cs;
  return x;
}

bool valid_op(int32_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

cublasStatus_t plan(const Desc& desc, const Layout* l[4], const std::string& api, Plan* out) {
  const char* names[4] = {"A", "B", "C", "D"};
  for (int i = 0; i < 4; ++i) {
    const Layout& x = *l[i];
    const std::string who = api + ": " + names[i] + "'s layout: ";
    if (x.order != CUBLASLT_ORDER_COL && x.order != CUBLASLT_ORDER_ROW)
      return fail(CUBLAS_STATUS_NOT_SUPPORTED, who + "only CUBLASLT_ORDER_COL and _ROW are emulated");
    if (x.batch_mode != CUBLASLT_BATCH_MODE_STRIDED || x.plane_offset != 0)
      return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                  who + "pointer-array batches and planar complex are not emulated");
    if (x.rows > 0x7FFFFFFF || x.cols > 0x7FFFFFFF)
      return fail(CUBLAS_STATUS_NOT_SUPPORTED, who + "rows or cols beyond int32_t");
    const uint64_t line = x.order == CUBLASLT_ORDER_COL ? x.rows : x.cols;
    if (x.ld < 1 || uint64_t(x.ld) < line)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  who + "ld = " + std::to_string(x.ld) + " < " + std::to_string(line));
    if (x.batch_count < 1 || x.batch_count != l[0]->batch_count)
      return fail(CUBLAS_STATUS_INVALID_VALUE, who + "batch count must be >= 1 and the same for A, B, C, D");
  }
  if (!valid_op(desc.transa) || !valid_op(desc.transb))
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": TRANSA or TRANSB is not CUBLAS_OP_N, _T or _C");
  if (desc.transc != CUBLAS_OP_N || desc.fill_mode != CUBLAS_FILL_MODE_FULL ||
      desc.epilogue != CUBLASLT_EPILOGUE_DEFAULT)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                api + ": TRANSC, FILL_MODE or EPILOGUE other than the default is not emulated");
  if (desc.pointer_mode != CUBLASLT_POINTER_MODE_HOST && desc.pointer_mode != CUBLASLT_POINTER_MODE_DEVICE)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, api + ": only the host and device pointer modes are emulated");
  const auto compute = cublasComputeType_t(desc.compute);
  const auto type = [&](int i) { return cudaDataType_t(l[i]->type); };
  const auto types =
      emu::blas::check_types(compute, cudaDataType_t(desc.scale), type(0), type(1), type(2), false);
  if (types == emu::blas::TypeCheck::kUnknown)
    return fail(CUBLAS_STATUS_INVALID_VALUE,
                api + ": a type, scale type or compute type that does not exist");
  if (types != emu::blas::TypeCheck::kOk || type(2) != type(3))
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                api + ": " + emu::blas::type_name(type(0)) + " x " + emu::blas::type_name(type(1)) + " -> " +
                    emu::blas::type_name(type(3)) + " with " + emu::blas::compute_name(compute) +
                    " is not a supported combination (or not emulated)");
  // op(A) is m x k, op(B) k x n, C and D m x n.
  const bool ta = desc.transa != CUBLAS_OP_N, tb = desc.transb != CUBLAS_OP_N;
  const int64_t m = ta ? l[0]->cols : l[0]->rows, k = ta ? l[0]->rows : l[0]->cols;
  const int64_t kb = tb ? l[1]->cols : l[1]->rows, n = tb ? l[1]->rows : l[1]->cols;
  for (int i : {2, 3})
    if (int64_t(l[i]->rows) != m || int64_t(l[i]->cols) != n || kb != k)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  api + ": op(A) is " + std::to_string(m) + " x " + std::to_string(k) + ", op(B) " +
                      std::to_string(kb) + " x " + std::to_string(n) + ", " + names[i] + " " +
                      std::to_string(l[i]->rows) + " x " + std::to_string(l[i]->cols) + ": they do not fit");
  Plan p;
  p.shape.m = m;
  p.shape.n = n;
  p.shape.k = k;
  p.shape.a = stored(*l[0], ta);
  p.shape.b = stored(*l[1], tb);
  p.shape.c = stored(*l[2], false);
  p.shape.d = stored(*l[3], false);
  p.shape.rounding = emu::blas::rounding_for(compute, type(0), CUBLAS_DEFAULT_MATH);
  p.batch = l[0]->batch_count;
  for (int i = 0; i < 4; ++i) p.stride[i] = l[i]->batch_stride;
  *out = p;
  return CUBLAS_STATUS_SUCCESS;
}

// Loads the four layouts; false if any is not a live descriptor.
bool layouts(cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
             cublasLtMatrixLayout_t d, Layout out[4]) {
  const cublasLtMatrixLayout_t in[4] = {a, b, c, d};
  for (int i = 0; i < 4; ++i) {
    if (!live<Layout>(in[i])) return false;
    out[i] = load<Layout>(in[i]);
  }
  return true;
}

}  // namespace

namespace emu {
bool& cublaslt_no_algo() {
  static bool no_algo = [] {
    const char* e = std::getenv("EMU_CUBLASLT_NO_ALGO");
    if (!e || std::string(e) == "0") return false;
    if (std::string(e) == "1") return true;
    detail::bad_setting("EMU_CUBLASLT_NO_ALGO", e, "0 or 1");
  }();
  return no_algo;
}
}  // namespace emu

// ------------------------------------------------------------------ handle --

cublasStatus_t cublasLtCreate(cublasLtHandle_t* lightHandle) {
  if (!lightHandle) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtCreate: lightHandle is null");
  *lightHandle = new cublasLtContext;
  std::lock_guard lock(registry_mu);
  live_handles().insert(*lightHandle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
  {
    std::lock_guard lock(registry_mu);
    if (!lightHandle || !live_handles().erase(lightHandle))
      return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtDestroy: not a handle from cublasLtCreate");
  }
  delete lightHandle;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) { return cublasGetStatusName(status); }
const char* cublasLtGetStatusString(cublasStatus_t status) { return cublasGetStatusString(status); }
size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

// ----------------------------------------------------------------- layouts --

cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t matLayout, size_t size,
                                                 cudaDataType type, uint64_t rows, uint64_t cols,
                                                 int64_t ld) {
  if (!matLayout || size < sizeof(Layout))
    return fail(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatrixLayoutInit: no room");
  Layout l;
  l.type = uint32_t(type);
  l.rows = rows;
  l.cols = cols;
  l.ld = ld;
  save(matLayout, l);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* matLayout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!matLayout) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutCreate: matLayout is null");
  *matLayout = new cublasLtMatrixLayoutOpaque_t;
  return cublasLtMatrixLayoutInit(*matLayout, type, rows, cols, ld);
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
  if (matLayout) std::memset(matLayout->data, 0, sizeof matLayout->data);  // a later use is caught
  delete matLayout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t matLayout,
                                                cublasLtMatrixLayoutAttribute_t attr, const void* buf,
                                                size_t sizeInBytes) {
  return set_attribute<Layout>(matLayout, attr, buf, sizeInBytes, layout_field,
                               "cublasLtMatrixLayoutSetAttribute");
}

cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t matLayout,
                                                cublasLtMatrixLayoutAttribute_t attr, void* buf,
                                                size_t sizeInBytes, size_t* sizeWritten) {
  return get_attribute<Layout>(matLayout, attr, buf, sizeInBytes, sizeWritten, layout_field,
                               "cublasLtMatrixLayoutGetAttribute");
}

// ------------------------------------------------------------ descriptors --

cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t matmulDesc, size_t size,
                                               cublasComputeType_t computeType, cudaDataType_t scaleType) {
  if (!matmulDesc || size < sizeof(Desc))
    return fail(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatmulDescInit: no room");
  Desc d;
  d.compute = computeType;
  d.scale = scaleType;
  save(matmulDesc, d);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* matmulDesc, cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
  if (!matmulDesc) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescCreate: matmulDesc is null");
  *matmulDesc = new cublasLtMatmulDescOpaque_t;
  return cublasLtMatmulDescInit(*matmulDesc, computeType, scaleType);
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
  if (matmulDesc) std::memset(matmulDesc->data, 0, sizeof matmulDesc->data);
  delete matmulDesc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t sizeInBytes) {
  return set_attribute<Desc>(matmulDesc, attr, buf, sizeInBytes, desc_field,
                             "cublasLtMatmulDescSetAttribute");
}

cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                              cublasLtMatmulDescAttributes_t attr, void* buf,
                                              size_t sizeInBytes, size_t* sizeWritten) {
  return get_attribute<Desc>(matmulDesc, attr, buf, sizeInBytes, sizeWritten, desc_field,
                             "cublasLtMatmulDescGetAttribute");
}

// ------------------------------------------------------------ preferences --

cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t pref, size_t size) {
  if (!pref || size < sizeof(Pref))
    return fail(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatmulPreferenceInit: no room");
  save(pref, Pref{});
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceCreate: pref is null");
  *pref = new cublasLtMatmulPreferenceOpaque_t;
  return cublasLtMatmulPreferenceInit(*pref);
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (pref) std::memset(pref->data, 0, sizeof pref->data);
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t sizeInBytes) {
  return set_attribute<Pref>(pref, attr, buf, sizeInBytes, pref_field,
                             "cublasLtMatmulPreferenceSetAttribute");
}

cublasStatus_t cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, void* buf,
                                                    size_t sizeInBytes, size_t* sizeWritten) {
  return get_attribute<Pref>(pref, attr, buf, sizeInBytes, sizeWritten, pref_field,
                             "cublasLtMatmulPreferenceGetAttribute");
}

// ------------------------------------------------------------------ matmul --

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle,
                                              cublasLtMatmulDesc_t operationDesc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t preference, int requestedAlgoCount,
                                              cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                              int* returnAlgoCount) {
  const std::string api = "cublasLtMatmulAlgoGetHeuristic";
  if (!valid(lightHandle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, api + ": not a handle from cublasLtCreate");
  if (requestedAlgoCount <= 0 || !heuristicResultsArray || !returnAlgoCount)
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": requestedAlgoCount <= 0 or a null output");
  *returnAlgoCount = 0;
  Layout l[4];
  if (!live<Desc>(operationDesc) || !live<Pref>(preference) || !layouts(Adesc, Bdesc, Cdesc, Ddesc, l))
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": a descriptor that was not created (or was destroyed)");
  const Layout* lp[4] = {&l[0], &l[1], &l[2], &l[3]};
  Plan p;
  if (cublasStatus_t s = plan(load<Desc>(operationDesc), lp, api, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  if (emu::cublaslt_no_algo()) return CUBLAS_STATUS_NOT_SUPPORTED;  // quietly: the fallback is the point
  const Pref pref = load<Pref>(preference);
  Algo algo;
  for (int i = 0; i < 4; ++i) algo.alignment[i] = std::max<uint32_t>(pref.alignment[i], 1);
  cublasLtMatmulHeuristicResult_t& r = heuristicResultsArray[0];
  r = cublasLtMatmulHeuristicResult_t{};
  save(&r.algo, algo);
  r.workspaceSize = 0;  // within any CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  *returnAlgoCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                              const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc, const void* B,
                              cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C,
                              cublasLtMatrixLayout_t Cdesc, void* D, cublasLtMatrixLayout_t Ddesc,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspaceSizeInBytes,
                              cudaStream_t stream) {
  const std::string api = "cublasLtMatmul";
  if (!valid(lightHandle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, api + ": not a handle from cublasLtCreate");
  Layout l[4];
  if (!live<Desc>(computeDesc) || !layouts(Adesc, Bdesc, Cdesc, Ddesc, l))
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": a descriptor that was not created (or was destroyed)");
  if (!alpha || !beta) return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": alpha or beta is null");
  const Desc desc = load<Desc>(computeDesc);
  const Layout* lp[4] = {&l[0], &l[1], &l[2], &l[3]};
  Plan p;
  if (cublasStatus_t s = plan(desc, lp, api, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  // No algo: the documented implicit heuristic query with default preferences.
  Algo chosen;
  if (!algo) {
    if (emu::cublaslt_no_algo())
      return fail(CUBLAS_STATUS_NOT_SUPPORTED, api + ": no algorithm (EMU_CUBLASLT_NO_ALGO)");
  } else {
    chosen = load<Algo>(algo);
    if (chosen.tag != kAlgoTag)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  api + ": algo is not one cublasLtMatmulAlgoGetHeuristic returned");
  }
  const void* pointers[4] = {A, B, C, D};
  const char* names[4] = {"A", "B", "C", "D"};
  for (int i = 0; i < 4; ++i)
    if (reinterpret_cast<uintptr_t>(pointers[i]) % chosen.alignment[i] != 0) {
      char where[32];
      std::snprintf(where, sizeof where, "%p", pointers[i]);
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  api + ": " + names[i] + " = " + where + " is not aligned to the " +
                      std::to_string(chosen.alignment[i]) + " bytes the algorithm was chosen for " +
                      "(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_" + names[i] + "_BYTES)");
    }
  if (C == D && (l[2].ld != l[3].ld || l[2].order != l[3].order || p.stride[2] != p.stride[3]))
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": in place (C == D) needs the same layout for C and D");
  if (workspaceSizeInBytes > 0 && !workspace)
    return fail(CUBLAS_STATUS_INVALID_VALUE, api + ": workspaceSizeInBytes > 0 with a null workspace");
  if (p.shape.m == 0 || p.shape.n == 0) return CUBLAS_STATUS_SUCCESS;

  const bool on_device = desc.pointer_mode == CUBLASLT_POINTER_MODE_DEVICE;
  const float host_alpha = on_device ? 0.0f : *static_cast<const float*>(alpha);
  const float host_beta = on_device ? 0.0f : *static_cast<const float*>(beta);
  const cudaError_t e = emu::enqueue(stream, api, [=] {
    if (workspaceSizeInBytes > 0)
      emu::check_device_range(workspace, workspaceSizeInBytes, (api + " workspace").c_str());
    Problem shape = p.shape;
    if (on_device) {
      emu::check_device_range(alpha, sizeof(float), (api + " alpha").c_str());
      emu::check_device_range(beta, sizeof(float), (api + " beta").c_str());
      shape.alpha = *static_cast<const float*>(alpha);
      shape.beta = *static_cast<const float*>(beta);
    } else {
      shape.alpha = host_alpha;
      shape.beta = host_beta;
    }
    for (int b = 0; b < p.batch; ++b) {
      Problem q = shape;
      Operand* ops[4] = {&q.a, &q.b, &q.c, &q.d};
      for (int i = 0; i < 4; ++i)
        ops[i]->data = static_cast<const char*>(pointers[i]) +
                       p.stride[i] * b * int64_t(emu::blas::element_size(ops[i]->type));
      emu::blas::run(q, p.batch == 1 ? api : api + " batch " + std::to_string(b));
    }
  });
  if (e != cudaSuccess)
    return fail(CUBLAS_STATUS_EXECUTION_FAILED, api + ": not queued: " + cudaGetErrorName(e));
  return CUBLAS_STATUS_SUCCESS;
}
