// Typed errors. Library code throws; the mains turn them into one line and an
// exit code (2 for bad input: config, data, command line, checkpoint; 1 for
// a failing disk and internal failures).
#pragma once

#include <stdexcept>
#include <string>

namespace moe {

// Bad user input of any kind. Exit code 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A config key is unknown, mistyped or inconsistent; the message names the key.
struct ConfigError : InputError {
  using InputError::InputError;
};
// A data file is missing, unreadable or malformed; the message names the file.
struct DataError : InputError {
  using InputError::InputError;
};
// The system refused a file operation: a full disk (ENOSPC), an I/O error
// (EIO), a missing permission. The message names the file. Exit code 1.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A broken invariant or a failing library/device call. Exit code 1.
struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define MOE_CHECK(cond, msg)                                                             \
  do {                                                                                   \
    if (!(cond))                                                                         \
      throw ::moe::InternalError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                 ": " + (msg));                                          \
  } while (0)

}  // namespace moe
