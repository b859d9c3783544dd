#include "core/keep_aside.h"

#include <filesystem>

#include "core/error.h"

namespace moe {

namespace fs = std::filesystem;

std::string keep_aside(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (!fs::exists(p, ec)) return "";
  // A directory keeps its whole name: "checkpoints" -> "checkpoints.1".
  const bool dir = fs::is_directory(p, ec);
  const std::string stem = dir ? p.filename().string() : p.stem().string();
  const std::string ext = dir ? "" : p.extension().string();
  for (int n = 1;; ++n) {
    const fs::path q = p.parent_path() / (stem + "." + std::to_string(n) + ext);
    if (fs::exists(q, ec)) continue;
    fs::rename(p, q, ec);
    if (ec) throw InputError(path + ": cannot move it aside to " + q.string() + ": " + ec.message());
    return q.string();
  }
}

}  // namespace moe
