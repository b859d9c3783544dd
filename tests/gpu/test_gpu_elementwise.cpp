// GPU elementwise kernels (kernels/elementwise.cu: add / scale, embedding,
// SwiGLU) against the CPU backend on random data, plus a determinism check (a
// second run from the same inputs gives the same bits). Every test skips
// cleanly when no CUDA device is visible, and the whole file reduces to one
// skipped test in a CPU-only build.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_device.h"
#include "core/error.h"
#include "support/gpu_test_util.h"
#include "elementwise.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::random_ints;
using moe::test::cpu;
using moe::test::normwise_rel_err;
using moe::test::elementwise_rel_err;
using moe::test::same_bits;

namespace kn = moe::kernels;

// fp32 against the CPU's fp32 in another order or with device expf (2 ulp):
// see gpu_test_util.h. Most of these ops have no long sums, so their errors
// are a few ulps (~3e-7); the comparisons below say where one is exact.
constexpr double kTol = 1e-5;

// ------------------------------------------------------------ add / scale --

TEST(GpuElementwise, AddAndScaleMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(1);
  for (size_t n : {size_t{1}, size_t{255}, size_t{1000003}}) {
    const auto y0 = normal(n, rng), x = normal(n, rng);
    auto ref = y0;
    cpu()->add_inplace(ref.data(), x.data(), n);
    DeviceBuffer<float> dy(y0), dx(x);
    kn::add_inplace(dy.get(), dx.get(), n, nullptr);
    const auto got = dy.download();
    EXPECT_LT(normwise_rel_err(got, ref), kTol) << "add n=" << n;
    EXPECT_TRUE(same_bits(got, ref)) << "add n=" << n;  // a single fp32 add: exact

    auto sref = x;
    cpu()->scale_inplace(sref.data(), -0.3721, n);
    kn::scale_inplace(dx.get(), -0.3721, n, nullptr);
    const auto sgot = dx.download();
    EXPECT_LT(elementwise_rel_err(sgot, sref), kTol) << "scale n=" << n;
    // Exact: both round the double factor to float once, then one fp32 multiply.
    EXPECT_TRUE(same_bits(sgot, sref)) << "scale n=" << n;
  }
}

// -------------------------------------------------------------- embedding --

TEST(GpuElementwise, EmbeddingForwardBackwardMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(2);
  struct Case {
    int V, N, D;
  };
  // Few vocab rows and many tokens: heavy repetition in the scatter-add; D
  // below, at and above the block width; vocab not a multiple of the classes.
  for (const Case c : {Case{1, 7, 3}, Case{13, 5000, 96}, Case{1000, 4096, 256},
                       Case{257, 3001, 300}}) {
    const auto table = normal(static_cast<size_t>(c.V) * c.D, rng);
    const auto tokens = random_ints(c.N, 0, c.V - 1, rng);
    const auto dy = normal(static_cast<size_t>(c.N) * c.D, rng);
    const auto dtable0 = normal(table.size(), rng);  // backward accumulates
    const std::string tag =
        "V=" + std::to_string(c.V) + " N=" + std::to_string(c.N) + " D=" + std::to_string(c.D);

    std::vector<float> y_ref(static_cast<size_t>(c.N) * c.D);
    auto dt_ref = dtable0;
    auto be = cpu();
    be->embedding_forward(y_ref.data(), table.data(), tokens.data(), c.N, c.D);
    be->embedding_backward(dt_ref.data(), dy.data(), tokens.data(), c.N, c.D);

    DeviceBuffer<float> d_table(table), d_y(y_ref.size()), d_dy(dy), d_dt(dtable0);
    DeviceBuffer<int32_t> d_tok(tokens);
    kn::embedding_forward(d_y.get(), d_table.get(), d_tok.get(), c.N, c.D, nullptr);
    EXPECT_TRUE(same_bits(d_y.download(), y_ref)) << tag;

    kn::embedding_backward(d_dt.get(), d_dy.get(), d_tok.get(), c.N, c.D, nullptr);
    const auto dt1 = d_dt.download();
    EXPECT_LT(normwise_rel_err(dt1, dt_ref), kTol) << tag;
    // Tokens are summed in order, as on the CPU: the same bits.
    EXPECT_TRUE(same_bits(dt1, dt_ref)) << tag;

    d_dt.upload(dtable0);
    kn::embedding_backward(d_dt.get(), d_dy.get(), d_tok.get(), c.N, c.D, nullptr);
    EXPECT_TRUE(same_bits(d_dt.download(), dt1)) << "determinism " << tag;
  }
}

// ----------------------------------------------------------------- SwiGLU --

TEST(GpuElementwise, SwigluForwardBackwardMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(3);
  struct Case {
    int N, F;
  };
  for (const Case c : {Case{1, 1}, Case{7, 33}, Case{333, 517}, Case{64, 2048}}) {
    const auto a13 = normal(static_cast<size_t>(c.N) * 2 * c.F, rng, 0.0, 3.0);
    const auto dh = normal(static_cast<size_t>(c.N) * c.F, rng);
    const std::string tag = "N=" + std::to_string(c.N) + " F=" + std::to_string(c.F);

    std::vector<float> h_ref(dh.size()), da_ref(a13.size());
    auto be = cpu();
    be->swiglu_forward(h_ref.data(), a13.data(), c.N, c.F);
    be->swiglu_backward(da_ref.data(), dh.data(), a13.data(), c.N, c.F);

    DeviceBuffer<float> d_a13(a13), d_dh(dh), d_h(h_ref.size()), d_da(da_ref.size());
    kn::swiglu_forward(d_h.get(), d_a13.get(), c.N, c.F, nullptr);
    kn::swiglu_backward(d_da.get(), d_dh.get(), d_a13.get(), c.N, c.F, nullptr);
    const auto h1 = d_h.download(), da1 = d_da.download();
    // Per element: expf (2 ulp on the GPU, < 1 on the CPU) and ~4 roundings,
    // no sums: ~5e-7.
    EXPECT_LT(normwise_rel_err(h1, h_ref), kTol) << tag;
    EXPECT_LT(normwise_rel_err(da1, da_ref), kTol) << tag;

    kn::swiglu_forward(d_h.get(), d_a13.get(), c.N, c.F, nullptr);
    kn::swiglu_backward(d_da.get(), d_dh.get(), d_a13.get(), c.N, c.F, nullptr);
    EXPECT_TRUE(same_bits(d_h.download(), h1)) << "determinism " << tag;
    EXPECT_TRUE(same_bits(d_da.download(), da1)) << "determinism " << tag;
  }
}

// ------------------------------------------------------------- bad inputs --

TEST(GpuElementwise, LaunchersRejectBadArguments) {
  // Argument checks happen on the host before any launch: no device needed,
  // but the launchers must exist in this build.
  EXPECT_THROW(kn::embedding_forward(nullptr, nullptr, nullptr, -1, 4, nullptr),
               moe::InternalError);
}


}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuElementwise, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MOE_WITH_CUDA
