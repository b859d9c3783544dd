// Moving an earlier run's output out of a new run's way: a file name.ext
// becomes name.N.ext, a directory name becomes name.N (the first N free), so
// nothing already written is overwritten or lost.
#pragma once

#include <string>

namespace moe {

// Renames `path` aside when it exists; returns the new path, or "" when
// there was nothing there.
std::string keep_aside(const std::string& path);

}  // namespace moe
