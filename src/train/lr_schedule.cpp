#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace moe {

double learning_rate(const TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * double(step + 1) / double(t.warmup_steps);
  switch (t.lr_schedule) {
    case LrSchedule::Constant:
      return t.lr;
    case LrSchedule::Multistep: {
      double lr = t.lr;
      for (size_t i = 0; i < t.lr_milestones.size(); ++i)
        if (step >= t.lr_milestones[i]) lr = t.lr_values[i];
      return lr;
    }
    case LrSchedule::Cosine: {
      const double span = double(std::max<int64_t>(1, t.steps - t.warmup_steps));
      const double progress = std::clamp(double(step - t.warmup_steps) / span, 0.0, 1.0);
      return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
  }
  return t.lr;
}

}  // namespace moe
