#include "eval/evaluator.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moe {

EvalSample eval_sample(int64_t total, int seq_len, int64_t max_tokens) {
  MOE_CHECK(total >= 0 && seq_len > 0 && max_tokens >= 0, "eval_sample: bad arguments");
  EvalSample s{total, total};
  if (max_tokens > 0) s.count = std::min(total, std::max<int64_t>(1, max_tokens / seq_len));
  return s;
}

template <typename T, typename A>
EvalResult evaluate(Transformer<T, A>& model, const ValidationReader& val, int batch,
                    int64_t max_tokens, Comm& comm) {
  const Config& cfg = model.config();
  const int S = cfg.model.seq_len, E = cfg.moe.n_routed;
  MOE_CHECK(val.seq_len() == S, "evaluate: reader sequence length differs from the model's");
  const EvalSample sample = eval_sample(val.num_sequences(), S, max_tokens);
  const int64_t n_seq = sample.count;
  if (n_seq <= 0) throw DataError(val.describe() + ": too few tokens for one sequence of " +
                                  std::to_string(S) + " + 1");

  EvalResult r;
  r.moe_layers = model.moe_layers();
  r.n_routed = E;
  r.loads.assign(size_t(r.moe_layers) * E, 0);
  std::vector<int32_t> tokens(size_t(batch) * S), targets(tokens.size());
  ForwardOptions opt;  // not training: forward only
  opt.counts = r.loads.data();
  double sums[2] = {0.0, 0.0};  // loss, tokens
  // Ranks take batches round-robin. Every rank runs the same number of
  // forwards (expert parallelism exchanges rows in each), repeating batch 0
  // uncounted where it has run out.
  const int64_t n_batches = (n_seq + batch - 1) / batch;
  const int64_t rounds = (n_batches + comm.size() - 1) / comm.size();
  ForwardOptions uncounted;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t b = round * comm.size() + comm.rank();
    const bool real = b < n_batches;
    const int64_t first = real ? b * batch : 0;
    const int B = int(std::min<int64_t>(batch, n_seq - first));
    for (int i = 0; i < B; ++i)
      val.batch(sample[first + i], 1, tokens.data() + size_t(i) * S, targets.data() + size_t(i) * S);
    const ForwardResult fr =
        model.forward(tokens.data(), targets.data(), B, real ? opt : uncounted);
    if (!real) continue;
    sums[0] += fr.loss_sum;
    sums[1] += double(fr.tokens);
  }
  comm.allreduce_sum(sums, 2);
  comm.allreduce_sum(r.loads.data(), r.loads.size());
  r.tokens = int64_t(sums[1]);
  r.sequences = n_seq;
  r.split_sequences = sample.total;
  r.loss = sums[0] / sums[1];
  r.perplexity = std::exp(r.loss);
  r.maxvio_global = max_violation_layers(r.loads, r.moe_layers, E);
  return r;
}

nlohmann::json eval_report(const EvalResult& r, int64_t step, const std::string& data,
                           const std::string& checkpoint) {
  nlohmann::json j = eval_to_json(r);
  j["checkpoint"] = checkpoint.empty() ? nlohmann::json(nullptr) : nlohmann::json(checkpoint);
  j["step"] = step;
  j["data"] = data;
  return j;
}

nlohmann::json eval_to_json(const EvalResult& r) {
  nlohmann::json loads = nlohmann::json::array();
  for (int l = 0; l < r.moe_layers; ++l)
    loads.push_back(std::vector<int64_t>(r.loads.begin() + size_t(l) * r.n_routed,
                                         r.loads.begin() + size_t(l + 1) * r.n_routed));
  return {{"loss", r.loss},
          {"perplexity", r.perplexity},
          {"tokens", r.tokens},
          {"sequences", r.sequences},
          {"split_sequences", r.split_sequences},
          {"maxvio_global", r.maxvio_global.mean},
          {"maxvio_global_layers", r.maxvio_global.per_layer},
          {"expert_loads", loads}};
}

template EvalResult evaluate(Transformer<float>&, const ValidationReader&, int, int64_t, Comm&);
template EvalResult evaluate(Transformer<double>&, const ValidationReader&, int, int64_t, Comm&);
template EvalResult evaluate(Transformer<float, bf16>&, const ValidationReader&, int, int64_t,
                             Comm&);

}  // namespace moe
