// Learning-rate schedules (step is 0-based; the rate used by step s):
//   warmup: linear from lr/warmup to lr over the first warmup_steps steps;
//   cosine: from lr down to min_lr over the remaining steps (paper, 1B);
//   multistep: lr, then lr_values[i] from step lr_milestones[i] (paper, 3B);
//   constant: lr.
#pragma once

#include <cstdint>

#include "config/config.h"

namespace moe {

double learning_rate(const TrainConfig& t, int64_t step);

}  // namespace moe
