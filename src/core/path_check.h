// Output paths checked before any work (docs/reliability.md): a directory a
// program will write into, or a file it will create, is tried when the
// program starts, so a bad path costs one line and exit code 2 at once
// instead of a failed save after hours of training or evaluation.
//
// What the system says is typed by errno: a failing disk (ENOSPC, EIO,
// EDQUOT) is an IoError (exit 1); anything else about a user's path (not a
// directory, no permission, a read-only file system, a missing parent) is an
// InputError (exit 2). The probes here are not file operations of
// core/file_io.h: they leave nothing behind and do not move its fault seam.
#pragma once

#include <filesystem>
#include <string>

namespace moe {

// True for the errno values of a failing disk rather than of a bad path.
bool is_disk_failure(int err);

// Throws the typed error (above) for `err` with the message
// "<path>: <what>: <strerror(err)>".
[[noreturn]] void throw_path_error(const std::string& path, const std::string& what, int err);

// Creates `dir` (and its parents) if missing, and checks that it is a
// directory this process can create files in: a probe file is created and
// removed. `setting` names where the path came from ("checkpoint.dir").
void check_output_dir(const std::string& dir, const std::string& setting);

// A file that will be created or replaced by a rename (written beside it
// first, core/file_io.h): not a directory, and its directory exists and a
// file can be created there (probed as above). An existing file is left as it is.
void check_output_file(const std::string& file, const std::string& setting);

// A directory that will be created by renaming a staging directory beside
// it (moe-export --output): it is absent or an empty directory, and its
// parent exists and takes new files. Nothing is created.
void check_new_output_dir(const std::string& dir, const std::string& setting);

// std::filesystem's exception about a user's path as one line:
// "<path>: cannot remove: Not a directory".
std::string describe(const std::filesystem::filesystem_error& e);

}  // namespace moe
