// Fuzz target: a checkpoint's trainer_state.json, then the config it carries
// as moe-eval parses it. Malformed state must be a DataError, a bad saved
// config a ConfigError.
#include <cstddef>
#include <cstdint>

#include "config/config.h"
#include "core/error.h"
#include "fuzz_input.h"
#include "train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moe::fuzz::write_file("trainer_state.json", data, size);
  try {
    const moe::TrainerState st = moe::read_trainer_state(moe::fuzz::scratch_dir().string());
    moe::parse_config(st.config_yaml, {"parallel.ep_size=1"}, 1);
  } catch (const moe::InputError&) {
  }
  return 0;
}
