#include "core/keep_aside.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "core/error.h"

namespace moe {

namespace fs = std::filesystem;

std::string keep_aside(const std::string& path, const std::string& stays) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "ck/" is "ck", not a "ck/.1" inside it
  std::error_code ec;
  if (!fs::exists(p, ec)) return "";
  // A directory keeps its whole name: "checkpoints" -> "checkpoints.1".
  const bool dir = fs::is_directory(p, ec);
  const std::string stem = dir ? p.filename().string() : p.stem().string();
  const std::string ext = dir ? "" : p.extension().string();
  for (int n = 1;; ++n) {
    const fs::path q = p.parent_path() / (stem + "." + std::to_string(n) + ext);
    if (fs::exists(q, ec)) continue;
    const auto fail = [&](const fs::path& what, const fs::path& to) {
      throw InputError(what.string() + ": cannot move it aside to " + to.string() + ": " +
                       ec.message());
    };
    if (!dir || stays.empty() || !fs::exists(p / stays, ec)) {
      fs::rename(p, q, ec);
      if (ec) fail(p, q);
      return q.string();
    }
    fs::create_directory(q, ec);
    if (ec) fail(p, q);
    std::vector<fs::path> entries;
    // What stays: the entry itself, and a directory holding one (a
    // log.out_dir inside checkpoint.dir keeps its own lock where it is).
    for (const auto& e : fs::directory_iterator(p, ec))
      if (e.path().filename() != stays && !fs::exists(e.path() / stays))
        entries.push_back(e.path());
    if (ec) fail(p, q);
    std::sort(entries.begin(), entries.end());
    for (const fs::path& e : entries) {
      fs::rename(e, q / e.filename(), ec);
      if (ec) fail(e, q / e.filename());
    }
    return q.string();
  }
}

}  // namespace moe
