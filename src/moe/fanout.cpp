#include "moe/fanout.h"

#include "core/error.h"

namespace moe {

void count_fanout(int64_t* hist, const int32_t* expert_idx, int N, int K,
                  const std::vector<int>& place_of_expert) {
  const int E = int(place_of_expert.size());
  for (int t = 0; t < N; ++t) {
    const int32_t* idx = expert_idx + size_t(t) * K;
    int distinct = 0;
    for (int k = 0; k < K; ++k) {
      MOE_CHECK(idx[k] >= 0 && idx[k] < E, "count_fanout: expert index out of range");
      const int place = place_of_expert[size_t(idx[k])];
      bool seen = false;  // K is small: a quadratic scan beats any set
      for (int j = 0; j < k && !seen; ++j) seen = place_of_expert[size_t(idx[j])] == place;
      distinct += !seen;
    }
    ++hist[distinct];
  }
}

Fanout fanout_of(const int64_t* hist, int K) {
  Fanout f;
  int64_t tokens = 0, sum = 0;
  for (int v = 0; v <= K; ++v) {
    tokens += hist[v];
    sum += int64_t(v) * hist[v];
    if (hist[v] > 0) f.max = v;
  }
  if (tokens > 0) f.mean = double(sum) / double(tokens);
  return f;
}

}  // namespace moe
