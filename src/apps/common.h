// Shared plumbing of the mains: error-to-exit-code mapping, logging setup.
#pragma once

#include <functional>
#include <string>

#include "config/config.h"
#include "core/error.h"

namespace moe {

// Runs body; turns InputError (bad config, data, arguments) into one line on
// stderr and exit code 2, an IoError (a full or failing disk) into one line
// and exit code 1, a std::filesystem error about a user's path into one line
// typed by its errno (core/path_check.h: 1 for a failing disk, else 2), any
// other failure into one "internal error" line and 1.
int run_main(const char* program, const std::function<int()>& body);

// In a multi-rank job a failing rank must end the whole job (the others would
// wait in their next collective forever): run_main calls this hook, if set,
// with the exit code after printing the error. `rank` prefixes messages.
void set_job_abort(std::function<void(int code)> abort, int rank);

// Idle threads must sleep, not spin: OpenMP threads that spin-wait between
// parallel regions starve OpenBLAS's own thread pool (several times slower on
// few cores), and OpenBLAS's threads, which by default spin (sched_yield) for
// about 0.1 s after each GEMM, take cores from the OpenMP regions that follow.
// libgomp and OpenBLAS read OMP_WAIT_POLICY and OPENBLAS_THREAD_TIMEOUT once
// at load, so when either is unset we set it (PASSIVE; 4, OpenBLAS's minimum:
// 2^4 cycles of spinning before a worker sleeps) and re-execute the program
// once. A user's own settings are kept.
void ensure_passive_thread_waits(char** argv);

// spdlog level from log.level; console pattern with a timestamp.
void setup_logging(const std::string& level);

// "loss_free (sign, additive, u=0.001)" and the like.
std::string describe_balance(const BalanceConfig& b);

}  // namespace moe
