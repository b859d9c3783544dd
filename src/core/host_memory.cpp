#include "core/host_memory.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

namespace moe {
namespace fs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::optional<uint64_t> to_u64(std::string_view s) {
  s = trim(s);
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<std::string> read_text(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The value of the line "key value" in a memory.stat text.
std::optional<uint64_t> stat_value(std::string_view stat, std::string_view key) {
  size_t at = 0;
  while (at < stat.size()) {
    size_t end = stat.find('\n', at);
    if (end == std::string_view::npos) end = stat.size();
    const std::string_view line = stat.substr(at, end - at);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ')
      return to_u64(line.substr(key.size() + 1));
    at = end + 1;
  }
  return std::nullopt;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

// The memory cgroup's hierarchy: where it is mounted, the mount's root
// within the hierarchy, and which version.
struct CgroupMount {
  std::string mount_point, root;
  bool v2 = false;
};

// From /proc/self/mountinfo: "id parent dev root mount-point options
// [optional fields] - fstype source super-options". A v1 memory controller
// wins over the v2 hierarchy (hybrid setups mount both; memory is then v1).
std::optional<CgroupMount> find_memory_mount(const std::string& mountinfo) {
  std::optional<CgroupMount> v1, v2;
  std::stringstream lines(mountinfo);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::stringstream left(line.substr(0, dash)), right(line.substr(dash + 3));
    std::string id, parent, dev, root, point, fstype, source, super;
    if (!(left >> id >> parent >> dev >> root >> point) || !(right >> fstype >> source >> super))
      continue;
    if (fstype == "cgroup2" && !v2) v2 = CgroupMount{point, root, true};
    if (fstype == "cgroup" && !v1) {
      const std::vector<std::string> opts = split(super, ',');
      if (std::find(opts.begin(), opts.end(), "memory") != opts.end())
        v1 = CgroupMount{point, root, false};
    }
  }
  return v1 ? v1 : v2;
}

// This process's path in the hierarchy, from /proc/self/cgroup lines
// "id:controllers:path" (v2: "0::path").
std::optional<std::string> cgroup_path(const std::string& self_cgroup, bool v2) {
  std::stringstream lines(self_cgroup);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::vector<std::string> list = split(controllers, ',');
    if (v2 ? (line.substr(0, a) == "0" && controllers.empty())
           : std::find(list.begin(), list.end(), "memory") != list.end())
      return line.substr(b + 1);
  }
  return std::nullopt;
}

}  // namespace

std::optional<uint64_t> meminfo_available(std::string_view meminfo) {
  const std::string_view key = "MemAvailable:";
  const size_t at = meminfo.find(key);
  if (at == std::string_view::npos || (at > 0 && meminfo[at - 1] != '\n')) return std::nullopt;
  std::string_view rest = meminfo.substr(at + key.size());
  rest = rest.substr(0, rest.find('\n'));
  rest = trim(rest);
  if (rest.size() < 3 || rest.substr(rest.size() - 2) != "kB") return std::nullopt;
  const auto kib = to_u64(rest.substr(0, rest.size() - 2));
  if (!kib) return std::nullopt;
  return *kib * 1024;
}

std::optional<uint64_t> cgroup_headroom(std::string_view limit_text, std::string_view usage_text,
                                        std::string_view stat) {
  if (trim(limit_text) == "max") return std::nullopt;  // v2: no limit
  const auto limit = to_u64(limit_text), usage = to_u64(usage_text);
  // v1 writes "no limit" as the largest page multiple below 2^63.
  if (!limit || !usage || *limit >= (uint64_t(1) << 60)) return std::nullopt;
  // v1's total_inactive_file counts the descendants too; v2's inactive_file does already.
  std::optional<uint64_t> inactive = stat_value(stat, "total_inactive_file");
  if (!inactive) inactive = stat_value(stat, "inactive_file");
  const uint64_t used = *usage - std::min(*usage, inactive.value_or(0));
  return *limit > used ? *limit - used : 0;
}

std::optional<AvailableMemory> cgroup_available(const fs::path& root) {
  const auto mountinfo = read_text(root / "proc/self/mountinfo");
  const auto self = read_text(root / "proc/self/cgroup");
  if (!mountinfo || !self) return std::nullopt;
  const std::optional<CgroupMount> mount = find_memory_mount(*mountinfo);
  if (!mount) return std::nullopt;
  const std::optional<std::string> path = cgroup_path(*self, mount->v2);
  if (!path) return std::nullopt;
  // The path is relative to the hierarchy's root; the mount shows the part
  // below mount->root. A container's own cgroup namespace may show a path
  // that is not under its mount: then the mount point is the cgroup.
  std::string rel = *path;
  if (mount->root != "/" && rel.rfind(mount->root, 0) == 0) rel = rel.substr(mount->root.size());
  const fs::path top = (root / fs::path(mount->mount_point).relative_path()).lexically_normal();
  const fs::path sub = fs::path(rel).relative_path();
  fs::path dir = sub.empty() ? top : (top / sub).lexically_normal();
  std::error_code ec;
  const std::string up = dir.lexically_relative(top).string();  // "/../x" paths leave the mount
  if (up.empty() || up.rfind("..", 0) == 0 || !fs::is_directory(dir, ec)) dir = top;
  const char* limit_file = mount->v2 ? "memory.max" : "memory.limit_in_bytes";
  const char* usage_file = mount->v2 ? "memory.current" : "memory.usage_in_bytes";
  // A limit on any ancestor holds too (a Slurm job's, above its step's).
  std::optional<uint64_t> least;
  for (fs::path d = dir;; d = d.parent_path()) {
    const auto limit = read_text(d / limit_file), usage = read_text(d / usage_file);
    if (limit && usage) {
      const auto room = cgroup_headroom(*limit, *usage, read_text(d / "memory.stat").value_or(""));
      if (room && (!least || *room < *least)) least = room;
    }
    if (d == top || d == d.parent_path()) break;
  }
  if (!least) return std::nullopt;
  return AvailableMemory{*least, std::string("cgroup ") + limit_file};
}

std::optional<AvailableMemory> host_available_memory(const fs::path& root) {
  std::optional<AvailableMemory> best;
  if (const auto text = read_text(root / "proc/meminfo"))
    if (const auto bytes = meminfo_available(*text)) best = AvailableMemory{*bytes, "MemAvailable"};
  if (auto cg = cgroup_available(root))
    if (!best || cg->bytes < best->bytes) best = std::move(cg);
  return best;
}

}  // namespace moe
