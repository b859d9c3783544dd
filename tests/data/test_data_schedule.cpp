// The stateless sampler (same global batch for any world size, repeatable,
// independent of call order) and the learning-rate schedules.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "data/token_source.h"
#include "train/lr_schedule.h"

namespace moe {
namespace {

// All tokens of step `step` as ranks 0..W-1 read them, concatenated in rank
// order, each rank walking its micro-batches.
std::vector<int32_t> global_batch(const TokenSource& src, int S, int G, int micro, int W,
                                  int64_t step, std::vector<int32_t>* targets) {
  std::vector<int32_t> all;
  for (int r = 0; r < W; ++r) {
    BatchSampler s(src, S, G, micro, r, W);
    std::vector<int32_t> tok(size_t(micro) * S), tgt(tok.size());
    for (int m = 0; m < s.micro_batches_per_rank(); ++m) {
      s.micro_batch(step, m, tok.data(), tgt.data());
      all.insert(all.end(), tok.begin(), tok.end());
      if (targets) targets->insert(targets->end(), tgt.begin(), tgt.end());
    }
  }
  return all;
}

TEST(Sampler, SameGlobalBatchOnAnyWorldSize) {
  SyntheticSource src(9, 100, 3, 16, 8);
  std::vector<int32_t> tgt1;
  const auto w1 = global_batch(src, 16, 8, 2, 1, 5, &tgt1);
  EXPECT_EQ(global_batch(src, 16, 8, 1, 2, 5, nullptr), w1);
  EXPECT_EQ(global_batch(src, 16, 8, 2, 4, 5, nullptr), w1);
  EXPECT_EQ(global_batch(src, 16, 8, 1, 8, 5, nullptr), w1);
  // Targets are the inputs shifted by one inside each sequence.
  for (int j = 0; j < 8; ++j)
    for (int t = 0; t + 1 < 16; ++t) EXPECT_EQ(tgt1[j * 16 + t], w1[j * 16 + t + 1]);
  // Different steps differ; the same step read again (any order) is the same.
  EXPECT_NE(global_batch(src, 16, 8, 2, 1, 6, nullptr), w1);
  EXPECT_EQ(global_batch(src, 16, 8, 2, 1, 5, nullptr), w1);
}

TEST(Sampler, SyntheticChainHasTheStatedBranching) {
  const int V = 50, branching = 3;
  SyntheticSource src(1, V, branching, 200, 4);
  std::vector<std::vector<int>> successors(V);
  std::vector<int32_t> seq(201);
  for (int j = 0; j < 4; ++j) {
    src.sequence(0, j, seq.data());
    for (int t = 0; t < 200; ++t) {
      ASSERT_GE(seq[t], 0);
      ASSERT_LT(seq[t], V);
      auto& s = successors[seq[t]];
      if (std::find(s.begin(), s.end(), seq[t + 1]) == s.end()) s.push_back(seq[t + 1]);
    }
  }
  for (const auto& s : successors) EXPECT_LE(s.size(), size_t(branching));
}

TEST(Sampler, TokenFileWindowsAreInBoundsAndRepeatable) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("moe_tokens_" + std::to_string(getpid()) + ".bin");
  {
    std::ofstream f(path, std::ios::binary);
    for (uint32_t i = 0; i < 1000; ++i) f.write(reinterpret_cast<const char*>(&i), 4);
  }
  TokenFileSource src(path.string(), TokenDType::U32, 1000, 3, 10, 4);
  EXPECT_EQ(src.tokens(), 1000);
  std::vector<int32_t> a(11), b(11);
  for (int64_t step = 0; step < 50; ++step)
    for (int j = 0; j < 4; ++j) {
      src.sequence(step, j, a.data());
      src.sequence(step, j, b.data());
      EXPECT_EQ(a, b);
      for (int t = 0; t < 10; ++t) EXPECT_EQ(a[t + 1], a[t] + 1);  // a contiguous window
      EXPECT_LE(a[10], 999);
    }
  EXPECT_THROW(TokenFileSource(path.string(), TokenDType::U32, 999, 3, 10, 4), DataError);
  EXPECT_THROW(TokenFileSource(path.string(), TokenDType::U32, 1000, 3, 1000, 4), DataError);
  std::filesystem::remove(path);
}

TEST(LrSchedule, WarmupCosineToFloor) {
  TrainConfig t;
  t.lr = 1e-3;
  t.min_lr = 1e-4;
  t.warmup_steps = 10;
  t.steps = 110;
  t.lr_schedule = LrSchedule::Cosine;
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-4);   // 1/10 of peak
  EXPECT_DOUBLE_EQ(learning_rate(t, 9), 1e-3);   // warmup ends at the peak
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), 1e-3);  // cosine starts at the peak
  EXPECT_NEAR(learning_rate(t, 60), 5.5e-4, 1e-15);  // halfway: (peak + floor) / 2
  EXPECT_DOUBLE_EQ(learning_rate(t, 110), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 500), 1e-4);  // past the end: the floor
}

TEST(LrSchedule, PaperMultistep) {
  TrainConfig t;  // the paper's 3B schedule
  t.lr = 7.8e-4;
  t.warmup_steps = 2000;
  t.steps = 56514;
  t.lr_schedule = LrSchedule::Multistep;
  t.lr_milestones = {45211, 50862};
  t.lr_values = {2.47e-4, 7.8e-5};
  EXPECT_DOUBLE_EQ(learning_rate(t, 999), 7.8e-4 * 1000 / 2000);
  EXPECT_DOUBLE_EQ(learning_rate(t, 2000), 7.8e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 45210), 7.8e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 45211), 2.47e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 50862), 7.8e-5);
  t.lr_schedule = LrSchedule::Constant;
  EXPECT_DOUBLE_EQ(learning_rate(t, 50862), 7.8e-4);
}

}  // namespace
}  // namespace moe
