// Communication fan-out of expert parallelism: over how many distinct places
// (EP ranks, or nodes) one token's routed top-K experts are spread, i.e. how
// many peers its rows travel to in the dispatch all-to-all (shared experts
// are local and do not count). Kept as histograms, tokens by fan-out 0..K,
// so that ranks and micro-batches add them exactly (integers, any order).
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

// hist[v] += the number of the N tokens whose K experts (expert_idx [N,K],
// host memory) lie in v distinct places; place_of_expert[e] is expert e's
// place. hist has K + 1 entries.
void count_fanout(int64_t* hist, const int32_t* expert_idx, int N, int K,
                  const std::vector<int>& place_of_expert);

struct Fanout {
  double mean = 0.0;  // over the counted tokens (and MoE layers)
  int max = 0;        // the largest fan-out of any counted token
};

// Mean and max of a histogram of K + 1 entries; 0 and 0 when it is empty.
Fanout fanout_of(const int64_t* hist, int K);

}  // namespace moe
