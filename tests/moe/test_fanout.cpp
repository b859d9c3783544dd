// Communication fan-out (moe/fanout.h) on a hand-computed case: 12 experts on
// 4 EP ranks (3 each: rank = e / 3), 2 ranks per node (node = e / 6), top-3.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "moe/fanout.h"

namespace moe {
namespace {

const std::vector<int> kRankOf = {0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3};
const std::vector<int> kNodeOf = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
constexpr int K = 3;
// Token by token, with its distinct ranks and nodes worked out by hand.
const std::vector<int32_t> kIdx = {
    0,  1, 2,   // ranks {0}        1   nodes {0}    1
    0,  3, 6,   // ranks {0,1,2}    3   nodes {0,1}  2
    11, 4, 9,   // ranks {3,1}      2   nodes {1,0}  2
    5,  3, 10,  // ranks {1,3}      2   nodes {0,1}  2
    8,  7, 6,   // ranks {2}        1   nodes {1}    1
    9,  10, 4,  // ranks {3,1}      2   nodes {1,0}  2
};
constexpr int N = 6;

TEST(Fanout, HandComputedRanksAndNodes) {
  std::vector<int64_t> ranks(K + 1, 0), nodes(K + 1, 0);
  count_fanout(ranks.data(), kIdx.data(), N, K, kRankOf);
  count_fanout(nodes.data(), kIdx.data(), N, K, kNodeOf);
  EXPECT_EQ(ranks, (std::vector<int64_t>{0, 2, 3, 1}));
  EXPECT_EQ(nodes, (std::vector<int64_t>{0, 2, 4, 0}));
  const Fanout r = fanout_of(ranks.data(), K), n = fanout_of(nodes.data(), K);
  EXPECT_DOUBLE_EQ(r.mean, 11.0 / 6);  // (1+3+2+2+1+2) / 6
  EXPECT_EQ(r.max, 3);
  EXPECT_DOUBLE_EQ(n.mean, 10.0 / 6);  // (1+2+2+2+1+2) / 6
  EXPECT_EQ(n.max, 2);
}

// Micro-batches, layers and ranks add their histograms: the statistics are
// those of all the tokens together, whatever the split.
TEST(Fanout, HistogramsAccumulate) {
  std::vector<int64_t> split(K + 1, 0), whole(K + 1, 0);
  count_fanout(split.data(), kIdx.data(), 2, K, kRankOf);
  count_fanout(split.data(), kIdx.data() + 2 * K, N - 2, K, kRankOf);
  count_fanout(whole.data(), kIdx.data(), N, K, kRankOf);
  EXPECT_EQ(split, whole);
}

TEST(Fanout, EmptyAndOnePlace) {
  const std::vector<int64_t> empty(K + 1, 0);
  const Fanout f = fanout_of(empty.data(), K);
  EXPECT_EQ(f.mean, 0.0);
  EXPECT_EQ(f.max, 0);
  std::vector<int64_t> one(K + 1, 0);
  count_fanout(one.data(), kIdx.data(), N, K, std::vector<int>(12, 0));  // every expert local
  EXPECT_EQ(one, (std::vector<int64_t>{0, N, 0, 0}));
}

TEST(Fanout, IndexOutsideThePlacementIsRefused) {
  std::vector<int64_t> hist(K + 1, 0);
  const std::vector<int32_t> bad = {0, 1, 12};
  EXPECT_THROW(count_fanout(hist.data(), bad.data(), 1, K, kRankOf), InternalError);
}

}  // namespace
}  // namespace moe
