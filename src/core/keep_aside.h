// Moving an earlier run's output out of a new run's way: a file name.ext
// becomes name.N.ext, a directory name becomes name.N (the first N free), so
// nothing already written is overwritten or lost.
#pragma once

#include <string>

namespace moe {

// Renames `path` aside when it exists; returns the new path, or "" when
// there was nothing there. A directory holding an entry named `stays` (the
// run's lock file, core/dir_lock.h) keeps that entry and its own name: the
// other entries move into the new directory, one by one (a crash in between
// leaves each in one of the two, none lost), except a directory that holds
// such an entry too (a nested log.out_dir with its own lock). A trailing
// '/' names the same directory.
std::string keep_aside(const std::string& path, const std::string& stays = "");

}  // namespace moe
