// Checkpoints, exact resume, non-finite steps and evaluation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "data/shard_format.h"
#include "eval/evaluator.h"
#include "support/nonfinite_routing.h"
#include "support/small_run.h"
#include "train/checkpoint.h"
#include "train/safetensors.h"
#include "train/trainer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using test::small_config;
using test::TrainRun;

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("moe_ckpt_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(SafeTensors, RoundTripAndCorruption) {
  const fs::path d = temp_dir("st");
  SafeTensorFile f;
  const float a[6] = {1, 2, 3, 4, 5, 6.5f};
  const double b[2] = {1.0 / 3.0, -2e300};
  const int64_t c[3] = {7, -8, 1LL << 40};
  f.tensors["a"] = make_f32(a, {2, 3});
  f.tensors["b"] = make_f64(b, {2});
  f.tensors["c"] = make_i64(c, {3});
  f.metadata["format"] = "moe-lfb";
  const std::string path = (d / "x.safetensors").string();
  write_safetensors(path, f);
  const SafeTensorFile g = read_safetensors(path);
  EXPECT_EQ(g.metadata.at("format"), "moe-lfb");
  for (const char* n : {"a", "b", "c"}) {
    EXPECT_EQ(g.tensors.at(n).dtype, f.tensors.at(n).dtype);
    EXPECT_EQ(g.tensors.at(n).shape, f.tensors.at(n).shape);
    EXPECT_EQ(g.tensors.at(n).data, f.tensors.at(n).data);
  }
  double back[2];
  copy_float_tensor(g.tensors.at("b"), back, 2, "b");
  EXPECT_EQ(back[1], -2e300);

  // Truncated data and a corrupt header: errors that name the file.
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 4);
  try {
    read_safetensors(path);
    FAIL() << "truncated file accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
  {
    std::fstream s(path, std::ios::in | std::ios::out | std::ios::binary);
    s.seekp(8);
    s.write("#####", 5);
  }
  EXPECT_THROW(read_safetensors(path), DataError);
  std::ofstream(d / "short.safetensors") << "abc";
  EXPECT_THROW(read_safetensors((d / "short.safetensors").string()), DataError);
  fs::remove_all(d);
}

// Train 2N steps straight, or N, checkpoint, a new process-like trainer
// resumes, N more: every loss and every weight must be bit-identical. Exact
// by construction: every TrainRun is the same config on a one-thread CPU
// backend (small_run.h) and a LocalComm, so the same GEMM shapes, thread
// count and reduction order; the checkpoint holds the weights and AdamW
// moments as raw T bytes (F32 or F64), the bias as F32 (its type), and the
// step, which alone decides the next batch and learning rate.
template <typename T>
void expect_bit_exact_resume(BalanceMethod method) {
  const fs::path d = temp_dir("resume");
  Config c = small_config(method, d / "ckpt");
  TrainRun<T> straight(c);
  const std::vector<double> all = straight.steps(8);

  std::vector<double> resumed;
  {
    TrainRun<T> first(c);
    resumed = first.steps(4);
    first.trainer->save_checkpoint();
  }
  TrainRun<T> second(c);
  second.trainer->resume_from(find_latest_checkpoint(c.checkpoint.dir));
  EXPECT_EQ(second.trainer->next_step(), 4);
  const auto rest = second.steps(4);
  resumed.insert(resumed.end(), rest.begin(), rest.end());
  EXPECT_EQ(resumed, all);
  EXPECT_EQ(second.params(), straight.params());
  EXPECT_EQ(second.trainer->balancer().bias(), straight.trainer->balancer().bias());
  EXPECT_EQ(second.trainer->state().tokens_seen, straight.trainer->state().tokens_seen);
  fs::remove_all(d);
}

TEST(Resume, BitExactLossFree) { expect_bit_exact_resume<float>(BalanceMethod::LossFree); }
TEST(Resume, BitExactAuxLoss) { expect_bit_exact_resume<float>(BalanceMethod::AuxLoss); }
TEST(Resume, BitExactFloat64) { expect_bit_exact_resume<double>(BalanceMethod::LossFree); }

TEST(Checkpoint, EveryTensorRoundTripsAndBiasSurvives) {
  const fs::path d = temp_dir("rt");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  TrainRun<float> a(c);
  a.steps(3);
  // The loss-free bias has moved away from 0 after 3 steps.
  const auto bias = a.trainer->balancer().bias();
  EXPECT_NE(std::accumulate(bias.begin(), bias.end(), 0.0, [](double s, float x) { return s + std::abs(x); }), 0.0);
  const std::string path = a.trainer->save_checkpoint();
  EXPECT_EQ(fs::path(path).filename(), "step_00000003");

  TrainRun<float> b(c);
  b.trainer->resume_from(path);
  // Exact, here and below: the same floats (weights, moments, bias), written
  // and read back as raw fp32 bytes.
  EXPECT_EQ(b.params(), a.params());
  std::vector<float> am, av, bm, bv;
  a.trainer->optimizer().moments_to_host(am, av);
  b.trainer->optimizer().moments_to_host(bm, bv);
  EXPECT_EQ(am, bm);
  EXPECT_EQ(av, bv);
  EXPECT_EQ(b.trainer->balancer().bias(), bias);

  // One named tensor per expert and one bias per MoE layer in the file.
  const SafeTensorFile f = read_safetensors(path + "/model.safetensors");
  EXPECT_TRUE(f.tensors.count("layers.1.moe.experts.3.w13"));
  EXPECT_TRUE(f.tensors.count("layers.1.moe.experts.0.w2"));
  EXPECT_TRUE(f.tensors.count(router_bias_name(1)));
  fs::remove_all(d);
}

TEST(Checkpoint, KeepLastPrunesAndLatestPoints) {
  const fs::path d = temp_dir("prune");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  TrainRun<float> a(c);
  for (int i = 0; i < 4; ++i) {
    a.steps(1);
    a.trainer->save_checkpoint();
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d / "ckpt"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step_00000003", "step_00000004"}));
  EXPECT_EQ(find_latest_checkpoint((d / "ckpt").string()), (d / "ckpt" / "step_00000004").string());
  // Without a readable `latest`, the newest step directory; a leftover
  // temporary directory of a crashed save is never picked.
  fs::remove(d / "ckpt" / "latest");
  fs::create_directories(d / "ckpt" / ".step_00000009.tmp");
  EXPECT_EQ(find_latest_checkpoint((d / "ckpt").string()), (d / "ckpt" / "step_00000004").string());
  EXPECT_EQ(find_latest_checkpoint((d / "nothing").string()), "");
  fs::remove_all(d);
}

TEST(Checkpoint, CorruptFilesGiveErrorsNamingThem) {
  const fs::path d = temp_dir("corrupt");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  TrainRun<float> a(c);
  a.steps(1);
  const std::string path = a.trainer->save_checkpoint();
  TrainRun<float> b(c);
  auto expect_error_naming = [&](const std::string& file) {
    try {
      b.trainer->resume_from(path);
      FAIL() << "corrupt checkpoint accepted";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  };
  const std::string model = path + "/model.safetensors";
  fs::resize_file(model, fs::file_size(model) / 2);
  expect_error_naming(model);
  std::ofstream(path + "/trainer_state.json") << "{ not json";
  expect_error_naming(path + "/trainer_state.json");

  // A checkpoint of another model (a different expert count) is refused.
  TrainRun<float> ok(c);
  ok.steps(1);
  const std::string good = ok.trainer->save_checkpoint();
  Config other = c;
  other.moe.n_routed = 6;
  TrainRun<float> wrong(other);
  EXPECT_THROW(wrong.trainer->resume_from(good), DataError);
  fs::remove_all(d);
}

TEST(Checkpoint, RefusesNonFiniteValues) {
  const fs::path d = temp_dir("nan");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  TrainRun<float> a(c);
  auto p = a.params();
  p[5] = std::numeric_limits<float>::quiet_NaN();
  a.trainer->model().params().params_from_host(p);
  EXPECT_THROW(a.trainer->save_checkpoint(), InternalError);
  EXPECT_EQ(find_latest_checkpoint(c.checkpoint.dir), "");
  fs::remove_all(d);
}

TEST(NonFinite, SkippedStepChangesNothingThenTrainingGoesOn) {
  const fs::path d = temp_dir("skip");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  TrainRun<float> a(c);
  // CPU backend: gradients are host memory, poisoned in place.
  a.trainer->after_backward_hook = [](int64_t step, ParamSet<float>& ps) {
    if (step == 2) ps.grads()[3] = std::numeric_limits<float>::infinity();
  };
  a.steps(2);
  const auto before = a.params();
  const auto bias_before = a.trainer->balancer().bias();
  const StepStats st = a.trainer->train_step(2);
  EXPECT_TRUE(st.skipped);
  EXPECT_FALSE(std::isfinite(st.grad_norm));
  EXPECT_EQ(a.params(), before);
  EXPECT_EQ(a.trainer->balancer().bias(), bias_before);
  EXPECT_EQ(a.trainer->state().skipped_steps, 1);
  const StepStats next = a.trainer->train_step(3);
  EXPECT_FALSE(next.skipped);
  EXPECT_NE(a.params(), before);
  fs::remove_all(d);
}

// A NaN router weight, the real way a diverged model routes: one expert's
// row makes that expert's score NaN for every token, the whole matrix makes
// every score NaN. Top-K still routes every token to K valid experts (the
// step runs, every pair is counted), and the NaN reaches the loss (picked
// NaN scores are gates) or at least the gradient norm (the score backward of
// the unpicked), so the trainer skips the step: parameters and the Loss-Free
// bias stay as they were.
TEST(NonFinite, NanRouterWeightIsASkippedStep) {
  const fs::path d = temp_dir("nan_router");
  for (const bool whole_router : {false, true}) {
    SCOPED_TRACE(whole_router ? "every router weight NaN" : "expert 2's router row NaN");
    Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
    TrainRun<float> a(c);
    a.steps(2);  // the bias has moved off zero
    ParamSet<float>& ps = a.trainer->model().params();
    const ParamInfo& router = ps.info(ps.find("layers.1.moe.router"));
    ASSERT_EQ(router.shape, (std::vector<int64_t>{4, 16}));  // [E, D]
    auto p = a.params();
    const size_t first = router.offset + (whole_router ? 0 : 2 * 16);
    const size_t n = whole_router ? router.numel : 16;
    std::fill_n(p.begin() + first, n, std::numeric_limits<float>::quiet_NaN());
    ps.params_from_host(p);
    const auto bias_before = a.trainer->balancer().bias();
    ASSERT_NE(bias_before, std::vector<float>(bias_before.size(), 0.f));

    const StepStats st = a.trainer->train_step(2);
    EXPECT_TRUE(st.skipped);
    EXPECT_FALSE(std::isfinite(st.grad_norm));
    // Only a picked NaN score is a gate: with one NaN expert nobody picks it.
    EXPECT_EQ(std::isfinite(st.loss), !whole_router) << st.loss;
    // Every (token, slot) went to a real expert: 4 sequences x 16 tokens x top-2.
    ASSERT_EQ(st.counts.size(), 4u);
    EXPECT_EQ(std::accumulate(st.counts.begin(), st.counts.end(), int64_t{0}), 4 * 16 * 2);
    if (whole_router) {
      EXPECT_EQ(st.counts, (std::vector<int64_t>{64, 64, 0, 0}));  // all NaN: by index
    } else {
      EXPECT_EQ(st.counts[2], 0);  // NaN sorts below every number
    }
    const auto after = a.params();  // bit for bit (NaN != NaN for ==)
    ASSERT_EQ(after.size(), p.size());
    EXPECT_EQ(std::memcmp(after.data(), p.data(), p.size() * sizeof(float)), 0);
    EXPECT_EQ(a.trainer->balancer().bias(), bias_before);
    EXPECT_EQ(a.trainer->state().skipped_steps, 1);
    fs::remove_all(d / "ckpt");
  }
  fs::remove_all(d);
}

// NaN or Inf where routing reads it: the MoE layer's input (its RMSNorm
// weight), the router's scores (a router row) and the Loss-Free bias (as a
// corrupt checkpoint would leave it). Each makes step k a skipped step: every
// token still goes to K valid experts, the parameters and the bias stay bit
// for bit; with the value put back the run goes on, and ends bit-identical to
// a run whose step k was skipped for an infinite gradient instead (so the
// AdamW moments and step count were untouched as well). That comparison is
// exact by construction: both runs are small_run.h's config on one CPU
// thread, the same steps in the same shapes, from the same state after k.
TEST(NonFinite, NonFiniteRoutingIsASkippedStepAndTheRunGoesOn) {
  const fs::path d = temp_dir("nan_routing");
  const Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  constexpr int64_t k = 2, n = 5;
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  TrainRun<float> ref(c);
  ref.trainer->after_backward_hook = [](int64_t step, ParamSet<float>& ps) {
    if (step == k) ps.grads()[3] = kInf;
  };
  ref.steps(n);
  const auto ref_params = ref.params();
  const auto ref_bias = ref.trainer->balancer().bias();

  const test::NonFiniteCase cases[] = {
      {"NaN in the MoE layer's input (layers.1.ln2[5])", "layers.1.ln2", 5, 1, kNaN},
      {"+inf in the MoE layer's input (layers.1.ln2)", "layers.1.ln2", 0, 16, kInf},
      {"+inf router row: expert 1's scores", "layers.1.moe.router", 16, 16, kInf},
      {"NaN router scores: every router weight", "layers.1.moe.router", 0, 64, kNaN},
      {"NaN Loss-Free bias of expert 3", "", 3, 1, kNaN},
      {"-inf Loss-Free bias of every expert", "", 0, 4, -kInf},
  };
  for (const test::NonFiniteCase& cs : cases) {
    SCOPED_TRACE(cs.what);
    TrainRun<float> a(c);
    a.steps(k);
    test::expect_skipped_step(*a.trainer, k, cs, 4 * 16 * 2);  // 4 sequences x 16 tokens x top-2
    a.steps(n - k - 1);
    EXPECT_EQ(a.params(), ref_params);
    EXPECT_EQ(a.trainer->balancer().bias(), ref_bias);
  }
  fs::remove_all(d);
}

// A resume from an older checkpoint while newer ones exist: its next save is
// not the newest step, and pruning must not take it (it is `latest`).
TEST(Checkpoint, PruningNeverRemovesTheCheckpointJustWritten) {
  const fs::path d = temp_dir("prune_resumed");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  c.checkpoint.keep_last = 1;
  TrainRun<float> a(c);
  a.steps(2);
  const std::string step2 = a.trainer->save_checkpoint();
  fs::copy(step2, d / "saved_step2");
  a.steps(2);
  a.trainer->save_checkpoint();  // step 4; step 2 is pruned
  TrainRun<float> b(c);
  b.trainer->resume_from((d / "saved_step2").string());
  b.steps(1);
  const std::string step3 = b.trainer->save_checkpoint();
  EXPECT_TRUE(fs::exists(fs::path(step3) / "trainer_state.json"));
  EXPECT_EQ(find_latest_checkpoint(c.checkpoint.dir), step3);
  EXPECT_FALSE(fs::exists(d / "ckpt" / "step_00000004"));  // the other one beyond keep_last
  fs::remove_all(d);
}

TEST(Checkpoint, RefusesANonFiniteBiasBothWays) {
  const fs::path d = temp_dir("nan_bias");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  TrainRun<float> a(c);
  a.steps(1);
  const std::string good = a.trainer->save_checkpoint();
  auto b = a.trainer->balancer().bias();
  b[1] = std::numeric_limits<float>::quiet_NaN();
  a.trainer->balancer().set_bias(b);
  EXPECT_THROW(a.trainer->save_checkpoint(), InternalError);
  // A checkpoint whose bias was corrupted on disk is refused when loaded.
  SafeTensorFile model = read_safetensors((fs::path(good) / "model.safetensors").string());
  model.tensors[router_bias_name(1)] = make_f32(b.data(), {4});
  write_safetensors((fs::path(good) / "model.safetensors").string(), model);
  TrainRun<float> fresh(c);
  try {
    fresh.trainer->resume_from(good);
    ADD_FAILURE() << "a NaN bias was loaded";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.moe.router_bias holds a non-finite value"),
              std::string::npos)
        << e.what();
  }
  fs::remove_all(d);
}

TEST(NonFinite, RunStopsAfterTooManySkipsOrAtOnceWithStop) {
  const fs::path d = temp_dir("stop");
  for (NonFinitePolicy policy : {NonFinitePolicy::Skip, NonFinitePolicy::Stop}) {
    Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
    c.train.nonfinite = policy;
    c.train.max_consecutive_skips = 3;
    TrainRun<float> a(c);
    int poisoned = 0;
    a.trainer->after_backward_hook = [&](int64_t step, ParamSet<float>& ps) {
      if (step >= 1) {
        ps.grads()[0] = std::numeric_limits<float>::quiet_NaN();
        ++poisoned;
      }
    };
    EXPECT_THROW(a.trainer->run(nullptr), InternalError);
    EXPECT_EQ(poisoned, policy == NonFinitePolicy::Skip ? 3 : 1);
    // The last good state was saved, and it is finite.
    const std::string latest = find_latest_checkpoint(c.checkpoint.dir);
    ASSERT_NE(latest, "");
    EXPECT_EQ(read_trainer_state(latest).step, policy == NonFinitePolicy::Skip ? 4 : 2);
    fs::remove_all(d / "ckpt");
  }
  fs::remove_all(d);
}

// Writes validation shards of `n` tokens (ids i % vocab).
std::string write_val_shards(const fs::path& dir, int n, int vocab) {
  fs::create_directories(dir);
  ShardHeader h;
  h.vocab_size = uint32_t(vocab);
  h.token_bytes = 2;
  h.eos_id = 0;
  ShardWriter w((dir / "val_00000.bin").string(), h);
  std::vector<uint32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = uint32_t((i * 7 + 1) % vocab);
  w.append(t.data(), t.size());
  w.end_document();
  w.finish();
  return dir.string();
}

TEST(Eval, HandComputedPerplexityAndMaxVio) {
  // All weights zero (norm weights one): every logit is 0, so each token's
  // loss is ln V and the perplexity is exactly V. The router scores are all
  // sigmoid(0) = 0.5: ties go to the lowest indices, so experts 0 and 1 take
  // every token: loads {n, n, 0, 0}, MaxVio = (n - n/2) / (n/2) = 1.
  const fs::path d = temp_dir("eval");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  c.data.val_path = write_val_shards(d / "val", 16 * 10 + 1, c.model.vocab_size);
  TrainRun<double> a(c);
  auto& ps = a.trainer->model().params();
  std::vector<double> p(ps.size(), 0.0);
  for (const ParamInfo& info : ps.all())
    if (info.init == ParamInit::Ones)
      std::fill(p.begin() + info.offset, p.begin() + info.offset + info.numel, 1.0);
  ps.params_from_host(p);
  auto val = make_validation_reader(c);
  ASSERT_TRUE(val);
  LocalComm comm;
  const EvalResult r = evaluate(a.trainer->model(), *val, 2, 0, comm);
  EXPECT_EQ(r.sequences, 10);
  EXPECT_EQ(r.tokens, 160);
  EXPECT_NEAR(r.loss, std::log(48.0), 1e-12);
  EXPECT_NEAR(r.perplexity, 48.0, 1e-9);
  EXPECT_EQ(r.loads, (std::vector<int64_t>{160, 160, 0, 0}));
  EXPECT_DOUBLE_EQ(r.maxvio_global.mean, 1.0);
  // With a selection bias on expert 3 (as a checkpoint of a Loss-Free run
  // would carry) every token picks experts 3 and 0.
  a.trainer->balancer().set_bias({0.0f, 0.0f, 0.0f, 0.1f});
  const EvalResult rb = evaluate(a.trainer->model(), *val, 2, 0, comm);
  EXPECT_EQ(rb.loads, (std::vector<int64_t>{160, 0, 0, 160}));
  // max_tokens keeps whole sequences.
  EXPECT_EQ(evaluate(a.trainer->model(), *val, 2, 50, comm).tokens, 48);
  fs::remove_all(d);
}

TEST(Eval, InTrainingEvalDoesNotChangeTraining) {
  const fs::path d = temp_dir("evaltrain");
  Config c = small_config(BalanceMethod::LossFree, d / "ckpt");
  c.checkpoint.dir = "";
  const std::string val_dir = write_val_shards(d / "val", 400, c.model.vocab_size);
  c.train.steps = 6;
  TrainRun<float> plain(c);
  plain.steps(6);

  c.train.eval_interval = 2;
  c.data.val_path = val_dir;
  c.log.out_dir = (d / "run").string();
  auto val = make_validation_reader(c);
  ASSERT_TRUE(val);
  auto be = make_cpu_backend<float>(1);
  LocalComm comm;
  auto data = make_train_source(c);
  Trainer<float> t(c, *be, comm, *data, val.get());
  MetricsLog log(c, "");
  EXPECT_EQ(t.run(&log), RunOutcome::Completed);
  // Exact: both trainers run the same steps on one thread (make_cpu_backend(1))
  // in the same shapes, and an eval only reads the weights and bias.
  EXPECT_EQ(t.model().params().params_to_host(), plain.params());
  EXPECT_EQ(t.balancer().bias(), plain.trainer->balancer().bias());
  std::ifstream f(d / "run" / "eval.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) ++n;
  EXPECT_EQ(n, 3);  // after steps 2, 4, 6
  fs::remove_all(d);
}

}  // namespace
}  // namespace moe
