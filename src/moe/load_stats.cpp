#include "moe/load_stats.h"

#include <algorithm>

#include "core/error.h"

namespace moe {

double max_violation(const int64_t* counts, int E) {
  int64_t total = 0, max_load = 0;
  for (int i = 0; i < E; ++i) {
    total += counts[i];
    max_load = std::max(max_load, counts[i]);
  }
  if (total == 0) return 0.0;
  const double mean = double(total) / E;
  return (double(max_load) - mean) / mean;
}

MaxVio max_violation_layers(const std::vector<int64_t>& counts, int layers, int E) {
  MOE_CHECK(counts.size() == size_t(layers) * E, "max_violation_layers: counts size");
  MaxVio r;
  for (int l = 0; l < layers; ++l) {
    r.per_layer.push_back(max_violation(counts.data() + size_t(l) * E, E));
    r.mean += r.per_layer.back();
  }
  if (layers > 0) r.mean /= layers;
  return r;
}

}  // namespace moe
