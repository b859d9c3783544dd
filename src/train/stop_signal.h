// Graceful stop on SIGINT/SIGTERM (what a scheduler sends before preemption)
// and SIGUSR1 (which mpirun forwards to its ranks, unlike TERM):
// the first signal asks the trainer to finish its current step, write a
// checkpoint and exit 0, and is acknowledged at once on stderr, one line per
// rank ("moe-train: rank 1: stop requested (SIGTERM): finishing step 12,
// then checkpoint; send again to exit without one"); a second one ends the
// process at once.
#pragma once

#include <cstdint>

namespace moe {

// What the acknowledgement says: the program, the rank (-1: a job of one
// process, no rank shown) and whether a checkpoint follows (checkpoint.dir
// set). `program` must outlive the process (a string literal).
void set_stop_context(const char* program, int rank, bool checkpoints);
// The step being worked on (1-based, as logged), set by the trainer before
// each step; the acknowledgement names it.
void set_stop_step(int64_t step);
void install_stop_signal_handlers();
bool stop_requested();
int stop_signal();          // the signal that asked to stop, 0 if none

}  // namespace moe
