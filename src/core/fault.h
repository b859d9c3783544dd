// Fault injection, the one mechanism the failure tests use: the environment
// variable MOE_FAULT_INJECTION lists the faults to inject, comma-separated,
// each "point" or "point=value". Unset (every production run) nothing is
// armed, and an armed fault logs a warning where it is read, so no run can
// trip one silently. The points (docs/design.md, section 6):
//   checkpoint.before_rename[=N]  the process exits with code 3 after writing a
//                              checkpoint (of step N only, if given) and
//                              before renaming it into place
//   train.fail_rank=R          world rank R throws an internal error in its
//                              second training step
//   io.fail_op=N[:EIO]         the N-th file operation of core/file_io.h
//                              fails with ENOSPC (or EIO)
//   memory.available_mib=N     the memory check of moe-train, moe-bench and
//                              moe-eval (plan/memory_check.h) sees N MiB
//                              available
#pragma once

#include <optional>
#include <string>

namespace moe {

// The value of `point` in MOE_FAULT_INJECTION ("" for a point without one),
// or nothing when it is not armed.
std::optional<std::string> injected_fault(const std::string& point);

}  // namespace moe
