#include "comm/topology.h"

#include <algorithm>

#include "core/error.h"

namespace moe {

namespace {

[[noreturn]] void bad(const std::string& what) {
  throw ConfigError("config: parallel.ep_size: " + what);
}

}  // namespace

Topology::Topology(int rank, int world, int ep, int n) : world_rank(rank), world_size(world),
                                                         ep_size(ep), n_routed(n) {
  if (world < 1 || rank < 0 || rank >= world)
    throw InternalError("topology: rank " + std::to_string(rank) + " of a world of " +
                        std::to_string(world));
  if (ep < 1) bad(std::to_string(ep) + " must be > 0");
  if (world % ep != 0)
    bad(std::to_string(ep) + " does not divide the number of ranks " + std::to_string(world));
  if (n < 1 || n % ep != 0)
    bad(std::to_string(ep) + " does not divide moe.n_routed " + std::to_string(n));
  ep_rank = rank % ep;
  ep_group = rank / ep;
  dp_size = world / ep;
  experts_per_rank = n / ep;
  first_expert = ep_rank * experts_per_rank;
}

std::vector<int> Topology::ep_group_ranks() const {
  std::vector<int> r;
  for (int i = 0; i < ep_size; ++i) r.push_back(ep_group * ep_size + i);
  return r;
}

std::vector<int> Topology::replica_ranks() const {
  std::vector<int> r;
  for (int g = 0; g < dp_size; ++g) r.push_back(g * ep_size + ep_rank);
  return r;
}

namespace {

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

}  // namespace

std::string Topology::describe() const {
  std::string s = "world " + std::to_string(world_size) + " ranks, ep_size " +
                  std::to_string(ep_size) + ", " + std::to_string(dp_size) +
                  (dp_size == 1 ? " copy" : " replicas") + " of each expert, " +
                  std::to_string(experts_per_rank) + " of " + std::to_string(n_routed) +
                  " routed experts per rank\n";
  for (int e = 0; e < ep_size; ++e) {
    Topology t(e, world_size, ep_size, n_routed);
    int last = t.first_expert + experts_per_rank - 1;
    s += last > t.first_expert ? "  experts " : "  expert ";
    s += std::to_string(t.first_expert);
    if (last > t.first_expert) s.append("-").append(std::to_string(last));
    s.append(dp_size > 1 ? " on ranks " : " on rank ");
    s.append(join(t.replica_ranks())).append("\n");
  }
  for (int g = 0; g < dp_size; ++g)
    s += "  EP group " + std::to_string(g) + (ep_size > 1 ? ": ranks " : ": rank ") +
         join(Topology(g * ep_size, world_size, ep_size, n_routed).ep_group_ranks()) + "\n";
  s.pop_back();  // no trailing newline: one log record
  return s;
}

std::vector<int> node_layout(Comm& ep, int64_t node_id) {
  const size_t P = size_t(ep.size());
  std::vector<int64_t> ids(P), ones(P, 1), send(P, node_id);
  ep.alltoallv(send.data(), ones.data(), ids.data(), ones.data());  // an all-gather
  std::vector<int64_t> seen;  // node ids, in order of first appearance
  std::vector<int> node;
  for (int64_t id : ids) {
    auto it = std::find(seen.begin(), seen.end(), id);
    if (it == seen.end()) it = seen.insert(seen.end(), id);
    node.push_back(int(it - seen.begin()));
  }
  return node;
}

Communicators make_communicators(Comm& world, const Topology& topo) {
  if (world.size() != topo.world_size || world.rank() != topo.world_rank)
    throw InternalError("topology: built for rank " + std::to_string(topo.world_rank) + "/" +
                        std::to_string(topo.world_size) + ", communicator is " +
                        world.describe());
  Communicators c;
  int r = world.rank();
  c.world = world.split(0, r);
  c.ep = world.split(topo.ep_group, r);
  c.replica = world.split(topo.ep_rank, r);
  return c;
}

}  // namespace moe
