// Expert load statistics. MaxVio = (max_i Load_i - mean Load) / mean Load,
// per MoE layer (paper, Section 4.1); reported as the mean over layers and
// per layer. MaxVio_batch uses one step's global-batch counts,
// MaxVio_global the counts over a whole evaluated set.
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

// MaxVio of one layer's counts [E]; 0 when no token was counted.
double max_violation(const int64_t* counts, int E);

struct MaxVio {
  double mean = 0.0;
  std::vector<double> per_layer;
};

// counts: [layers * E].
MaxVio max_violation_layers(const std::vector<int64_t>& counts, int layers, int E);

}  // namespace moe
