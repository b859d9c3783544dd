// Graceful stop on SIGINT/SIGTERM (what a scheduler sends before preemption)
// and SIGUSR1 (which mpirun forwards to its ranks, unlike TERM):
// the first signal asks the trainer to finish its current step, write a
// checkpoint and exit 0; a second one ends the process at once.
#pragma once

namespace moe {

void install_stop_signal_handlers();
bool stop_requested();
int stop_signal();          // the signal that asked to stop, 0 if none

}  // namespace moe
