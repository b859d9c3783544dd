// The tensors of one checkpoint, collected where the checkpoint is written
// (world rank 0) from wherever training keeps them: the AdamW moments of
// ZeRO-1 shards are gathered first, and with expert parallelism the experts
// of the first EP group's other ranks are sent to rank 0, which names them
// by the expert layout every rank shares (expert_region_layout).
#pragma once

#include <vector>

#include "comm/comm.h"
#include "config/config.h"
#include "layers/params.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace moe {

// Collective over `world` (and `ep`, the EP group, null without expert
// parallelism). Every tensor of the model on world rank 0; empty elsewhere.
template <typename T, typename A>
std::vector<TensorState<T>> gather_checkpoint_tensors(const Config& cfg, const ParamSet<T>& ps,
                                                      Optimizer<T, A>& optimizer, Comm& world,
                                                      Comm* ep);

}  // namespace moe
