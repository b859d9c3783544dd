// The evaluation sample (train.eval_max_tokens, moe-eval --max-tokens):
// evenly spaced whole sequences over the whole validation split, not its
// first ones, the same for any number of ranks.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "data/shard_dataset.h"
#include "data/shard_format.h"
#include "eval/evaluator.h"
#include "support/small_run.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using test::small_config;
using test::TrainRun;

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("moe_evalsample_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_shard(const fs::path& file, const std::vector<uint32_t>& tokens, int vocab) {
  fs::create_directories(file.parent_path());
  ShardHeader h;
  h.vocab_size = uint32_t(vocab);
  h.token_bytes = 2;
  h.eos_id = 0;
  ShardWriter w(file.string(), h);
  w.append(tokens.data(), tokens.size());
  w.end_document();
  w.finish();
}

std::vector<int64_t> indices(const EvalSample& s) {
  std::vector<int64_t> k;
  for (int64_t i = 0; i < s.count; ++i) k.push_back(s[i]);
  return k;
}

// Rank `rank` of a world of `size` whose sums are left to the test: each
// rank's EvalResult then holds that rank's own share.
class RankOfMany final : public Comm {
 public:
  RankOfMany(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(int64_t*, size_t) override {}
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void reduce_scatter_sum(float*, const int64_t*) override { std::abort(); }
  void reduce_scatter_sum(double*, const int64_t*) override { std::abort(); }
  void allgather(float*, const int64_t*) override { std::abort(); }
  void allgather(double*, const int64_t*) override { std::abort(); }
  void alltoallv(const int64_t*, const int64_t*, int64_t*, const int64_t*) override { std::abort(); }
  void alltoallv(const float*, const int64_t*, float*, const int64_t*) override { std::abort(); }
  void alltoallv(const double*, const int64_t*, double*, const int64_t*) override { std::abort(); }
  void alltoallv(const bf16*, const int64_t*, bf16*, const int64_t*) override { std::abort(); }
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { std::abort(); }
  [[noreturn]] void abort(int) override { std::abort(); }
  std::string describe() const override { return "test rank"; }

 private:
  int rank_, size_;
};

TEST(EvalSample, EvenlySpacedWholeSequences) {
  // floor(i * total / count), by hand.
  EXPECT_EQ(indices(eval_sample(10, 16, 4 * 16)), (std::vector<int64_t>{0, 2, 5, 7}));
  EXPECT_EQ(indices(eval_sample(7, 16, 3 * 16 + 15)), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(indices(eval_sample(100, 8, 3 * 8)), (std::vector<int64_t>{0, 33, 66}));
  // Fewer tokens than a sequence still evaluate one; enough for all, or 0:
  // the whole split, in order.
  EXPECT_EQ(indices(eval_sample(10, 16, 5)), (std::vector<int64_t>{0}));
  EXPECT_EQ(indices(eval_sample(5, 16, 0)), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(indices(eval_sample(5, 16, 1000)), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // A large split: the first and the last stretch are both sampled, the
  // steps are even, and the sample is the same at every call.
  const EvalSample s = eval_sample(1000003, 128, 1000 * 128);
  ASSERT_EQ(s.count, 1000);
  EXPECT_EQ(s[0], 0);
  EXPECT_GE(s[s.count - 1], 1000003 - 1001);
  for (int64_t i = 1; i < s.count; ++i) {
    EXPECT_GE(s[i] - s[i - 1], 1000);
    EXPECT_LE(s[i] - s[i - 1], 1001);
  }
  EXPECT_EQ(indices(s), indices(eval_sample(1000003, 128, 1000 * 128)));
}

// A split whose halves differ: 10 sequences of 16 tokens, the first five one
// repeated token, the last five a varied stream. Evaluating 4 sequences'
// worth takes sequences 0, 2, 5 and 7 of both halves: the mean of those
// sequences evaluated one by one, not of the first four.
struct TwoHalves : ::testing::Test {
  static constexpr int S = 16, kSeqs = 10;
  fs::path d = temp_dir("halves");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  std::vector<uint32_t> tokens;
  TwoHalves() {
    for (int i = 0; i < kSeqs * S + 1; ++i)
      tokens.push_back(i < kSeqs / 2 * S ? 5u : uint32_t((i * 7 + 1) % c.model.vocab_size));
    write_shard(d / "val" / "val_00000.bin", tokens, c.model.vocab_size);
    c.data.val_path = (d / "val").string();
  }
  ~TwoHalves() override { fs::remove_all(d); }

  // Sequence k alone: its S + 1 tokens as a split of one sequence.
  EvalResult one_sequence(Transformer<double>& model, int64_t k) {
    const fs::path f = d / ("seq_" + std::to_string(k)) / "val_00000.bin";
    write_shard(f, std::vector<uint32_t>(tokens.begin() + k * S, tokens.begin() + k * S + S + 1),
                c.model.vocab_size);
    ValidationReader one(ShardSet({f.string()}, c.model.vocab_size, f.string()), S);
    EXPECT_EQ(one.num_sequences(), 1);
    LocalComm comm;
    return evaluate(model, one, 1, 0, comm);
  }
  // Mean loss and summed loads of sequences `ks`, each evaluated alone.
  std::pair<double, std::vector<int64_t>> one_by_one(Transformer<double>& model,
                                                     const std::vector<int64_t>& ks) {
    double loss = 0;
    std::vector<int64_t> loads;
    for (int64_t k : ks) {
      const EvalResult r = one_sequence(model, k);
      EXPECT_EQ(r.tokens, S);
      loss += r.loss / double(ks.size());  // every sequence holds S targets
      if (loads.empty()) loads.assign(r.loads.size(), 0);
      for (size_t e = 0; e < loads.size(); ++e) loads[e] += r.loads[e];
    }
    return {loss, loads};
  }
};

TEST_F(TwoHalves, MaxTokensAveragesSequencesFromBothHalves) {
  TrainRun<double> run(c);
  run.steps(2);  // routing and losses that depend on the tokens
  auto& model = run.trainer->model();
  auto val = make_validation_reader(c);
  ASSERT_TRUE(val);
  ASSERT_EQ(val->num_sequences(), kSeqs);
  LocalComm comm;
  const EvalResult r = evaluate(model, *val, 2, 4 * S, comm);
  EXPECT_EQ(r.sequences, 4);
  EXPECT_EQ(r.split_sequences, kSeqs);
  EXPECT_EQ(r.tokens, 4 * S);
  const auto [loss, loads] = one_by_one(model, {0, 2, 5, 7});
  EXPECT_NEAR(r.loss, loss, 1e-12 * loss);
  EXPECT_EQ(r.loads, loads);
  // The first four sequences (all of the repeated token, every token routed
  // alike) say something else, far beyond the tolerance above.
  const auto [prefix_loss, prefix_loads] = one_by_one(model, {0, 1, 2, 3});
  EXPECT_GT(std::abs(r.loss - prefix_loss), 1e-6 * loss) << r.loss << " vs " << prefix_loss;
  EXPECT_NE(r.loads, prefix_loads);
  // The same sample at every evaluation.
  const EvalResult again = evaluate(model, *val, 2, 4 * S, comm);
  EXPECT_EQ(again.loss, r.loss);
  EXPECT_EQ(again.loads, r.loads);
}

TEST_F(TwoHalves, RanksTogetherEvaluateTheOneRankSample) {
  TrainRun<double> run(c);
  run.steps(2);
  auto& model = run.trainer->model();
  auto val = make_validation_reader(c);
  ASSERT_TRUE(val);
  LocalComm local;
  // 5 of 10 sequences (0, 2, 4, 6, 8), batches of 2: 3 batches.
  const EvalResult one = evaluate(model, *val, 2, 5 * S, local);
  ASSERT_EQ(one.sequences, 5);
  const auto [loss, loads_even] = one_by_one(model, {0, 2, 4, 6, 8});
  EXPECT_NEAR(one.loss, loss, 1e-12 * loss);
  EXPECT_EQ(one.loads, loads_even);
  for (int world : {2, 3}) {
    double loss_sum = 0;
    int64_t tokens = 0;
    std::vector<int64_t> loads(one.loads.size(), 0);
    for (int rank = 0; rank < world; ++rank) {
      RankOfMany comm(rank, world);
      const EvalResult r = evaluate(model, *val, 2, 5 * S, comm);  // this rank's share
      EXPECT_EQ(r.sequences, 5);
      if (r.tokens == 0) continue;
      loss_sum += r.loss * double(r.tokens);
      tokens += r.tokens;
      for (size_t e = 0; e < loads.size(); ++e) loads[e] += r.loads[e];
    }
    EXPECT_EQ(tokens, one.tokens) << world << " ranks";
    EXPECT_NEAR(loss_sum / double(tokens), one.loss, 1e-12 * one.loss) << world << " ranks";
    EXPECT_EQ(loads, one.loads) << world << " ranks";
  }
}

}  // namespace
}  // namespace moe
