// Held-out evaluation the way the paper measures it: mean token loss and
// perplexity over the validation split, and MaxVio_global per MoE layer from
// expert loads counted over the whole evaluated set. Forward passes only;
// nothing here touches the balancing counts or the bias.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "data/shard_dataset.h"
#include "comm/comm.h"
#include "model/transformer.h"
#include "moe/load_stats.h"

namespace moe {

struct EvalResult {
  double loss = 0.0;        // mean token cross-entropy
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;       // predicted tokens evaluated
  int64_t sequences = 0;        // sequences evaluated
  int64_t split_sequences = 0;  // sequences in the split (more when sampled)
  MaxVio maxvio_global;
  std::vector<int64_t> loads;  // [moe_layers * n_routed] tokens per expert
  int moe_layers = 0, n_routed = 0;
};

// The sequences an evaluation reads: all `total` of the split, or, when
// max_tokens > 0 holds fewer, count = max(1, max_tokens / seq_len) of them
// spread evenly over the whole split: sample i is sequence
// floor(i * total / count). A prefix would see only the first documents
// written (moe-data writes them in input order, so one file or domain); this
// sample is fixed by (total, count) alone: the same at every eval, in
// moe-eval, and for any number of ranks.
struct EvalSample {
  int64_t total = 0, count = 0;
  int64_t operator[](int64_t i) const {
    return int64_t((unsigned __int128)i * uint64_t(total) / uint64_t(count));
  }
};
EvalSample eval_sample(int64_t total, int seq_len, int64_t max_tokens);

// Evaluates eval_sample(val.num_sequences(), S, max_tokens) of `val`
// (max_tokens 0: the whole split), `batch` sequences per forward; ranks of
// `comm` split the batches and sum their results.
template <typename T, typename A>
EvalResult evaluate(Transformer<T, A>& model, const ValidationReader& val, int batch,
                    int64_t max_tokens, Comm& comm);

nlohmann::json eval_to_json(const EvalResult& r);
// eval.json, as moe-eval and the end of training write it: eval_to_json plus
// the step evaluated, the data's description and the checkpoint holding
// those weights (null when none was written).
nlohmann::json eval_report(const EvalResult& r, int64_t step, const std::string& data,
                           const std::string& checkpoint);

}  // namespace moe
