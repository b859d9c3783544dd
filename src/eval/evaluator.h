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
  int64_t sequences = 0;
  MaxVio maxvio_global;
  std::vector<int64_t> loads;  // [moe_layers * n_routed] tokens per expert
  int moe_layers = 0, n_routed = 0;
};

// Evaluates the first sequences of `val` (all of them, or as many whole
// sequences as fit in max_tokens when > 0), `batch` sequences per forward;
// ranks of `comm` split the batches and sum their results.
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
