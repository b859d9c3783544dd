#include "apps/common.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <utility>

#include "core/path_check.h"

namespace moe {

namespace {
std::function<void(int)> g_job_abort;
int g_rank = -1;

int fail(const char* program, const char* kind, const char* what, int code) {
  if (g_rank >= 0)
    std::fprintf(stderr, "%s: rank %d: %s%s\n", program, g_rank, kind, what);
  else
    std::fprintf(stderr, "%s: %s%s\n", program, kind, what);
  std::fflush(stderr);
  if (g_job_abort) g_job_abort(code);
  return code;
}
}  // namespace

void set_job_abort(std::function<void(int code)> abort, int rank) {
  g_job_abort = std::move(abort);
  g_rank = rank;
}

int run_main(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const InputError& e) {
    return fail(program, "error: ", e.what(), 2);
  } catch (const IoError& e) {
    return fail(program, "error: ", e.what(), 1);
  } catch (const std::filesystem::filesystem_error& e) {  // about a user's path: typed by errno
    return fail(program, "error: ", describe(e).c_str(), is_disk_failure(e.code().value()) ? 1 : 2);
  } catch (const std::exception& e) {
    return fail(program, "internal error: ", e.what(), 1);
  }
}

void ensure_passive_thread_waits(char** argv) {
  bool set = false;
  for (const auto& [name, value] : {std::pair{"OMP_WAIT_POLICY", "PASSIVE"},
                                    std::pair{"OPENBLAS_THREAD_TIMEOUT", "4"}}) {
    if (std::getenv(name) != nullptr) continue;
    setenv(name, value, 1);
    set = true;
  }
  if (set) execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

void setup_logging(const std::string& level) {
  spdlog::set_pattern("[%H:%M:%S] %v");
  spdlog::set_level(spdlog::level::from_str(level));
}

std::string describe_balance(const BalanceConfig& b) {
  switch (b.method) {
    case BalanceMethod::LossFree:
      return std::string("loss_free (") + to_string(b.update_rule) + ", " + to_string(b.bias_mode) +
             ", u=" + std::to_string(b.update_rate) + (b.center_bias ? ", centred" : "") +
             (b.seq_aux_alpha > 0 ? ", seq_aux_alpha=" + std::to_string(b.seq_aux_alpha) : "") +
             ")";
    case BalanceMethod::AuxLoss:
      return std::string("aux_loss (alpha=") + std::to_string(b.aux_alpha) + ", scope " +
             to_string(b.aux_scope) + ")";
    case BalanceMethod::None:
      return "none";
  }
  return "?";
}

}  // namespace moe
