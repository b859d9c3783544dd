// The memory this process can still take on the host: the kernel's
// MemAvailable, and the headroom of its cgroup (a container's or a Slurm
// job's limit), whichever is smaller. moe-train, moe-bench and moe-eval
// compare it with their memory plan before they allocate (plan/memory_check.h).
// The readers take file contents or a root directory, so tests can hand them
// made-up /proc and /sys trees.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace moe {

struct AvailableMemory {
  uint64_t bytes = 0;
  std::string source;  // where the figure came from: "MemAvailable", "cgroup memory.max", ...
};

// MemAvailable of a /proc/meminfo text, in bytes; nothing when absent
// (kernels before 3.14) or malformed.
std::optional<uint64_t> meminfo_available(std::string_view meminfo);

// A cgroup's memory headroom from the contents of its files: the limit
// (v2 memory.max, "max" for none; v1 memory.limit_in_bytes, where a value
// above 2^60 means none) minus the usage (memory.current or
// memory.usage_in_bytes) less the inactive file pages of memory.stat
// (inactive_file; v1 total_inactive_file), which the kernel reclaims before
// it kills anything. Nothing when there is no limit or a file is malformed;
// 0 when the usage is at the limit.
std::optional<uint64_t> cgroup_headroom(std::string_view limit, std::string_view usage,
                                        std::string_view stat);

// The smallest headroom of this process's memory cgroup and its ancestors up
// to the mount point, found through root/proc/self/mountinfo and
// root/proc/self/cgroup (v1 memory controller or v2 unified hierarchy).
// Nothing when no cgroup in the chain has a limit.
std::optional<AvailableMemory> cgroup_available(const std::filesystem::path& root = "/");

// min(MemAvailable, cgroup headroom) under `root`; nothing when neither is
// known (not Linux).
std::optional<AvailableMemory> host_available_memory(const std::filesystem::path& root = "/");

}  // namespace moe
