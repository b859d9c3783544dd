// Where experts live. Ranks form EP groups of ep_size CONSECUTIVE ranks; each
// group holds every routed expert, n_routed/ep_size per rank. Ranks with the
// same ep_rank in different groups hold the same experts: a replica group
// (dp_size = world/ep_size of them), whose expert gradients are summed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/comm.h"

namespace moe {

struct Topology {
  // Throws ConfigError "config: parallel.ep_size: ..." unless ep_size divides
  // both world_size and n_routed.
  Topology(int world_rank, int world_size, int ep_size, int n_routed);

  int world_rank, world_size, ep_size, n_routed;
  int ep_rank;           // world_rank % ep_size: position in the EP group
  int ep_group;          // world_rank / ep_size: which EP group
  int dp_size;           // world_size / ep_size: replicas of each expert
  int experts_per_rank;  // n_routed / ep_size
  int first_expert;      // ep_rank * experts_per_rank

  int owner_of(int expert) const { return expert / experts_per_rank; }  // an ep rank
  bool holds(int expert) const {
    return expert >= first_expert && expert < first_expert + experts_per_rank;
  }
  std::vector<int> ep_group_ranks() const;  // world ranks of this rank's EP group
  std::vector<int> replica_ranks() const;   // world ranks holding this rank's experts
  std::string describe() const;             // multi-line layout, for rank 0's log
};

struct Communicators {
  std::unique_ptr<Comm> world, ep, replica;
};

// Collective over `ep`: the node of each rank of the EP group, numbered 0, 1,
// ... in the order the group's ranks first reach them. node_id: any number
// the ranks of one node share and no other node has (MpiEnvironment::node_id).
std::vector<int> node_layout(Comm& ep, int64_t node_id);

// ep = world.split(ep_group, rank), replica = world.split(ep_rank, rank); the
// returned world is a second handle on `world` (a split with one color).
// Collective over `world`.
Communicators make_communicators(Comm& world, const Topology& topo);

}  // namespace moe
