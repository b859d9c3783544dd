// Fuzz target: the safetensors reader (checkpoints, moe-export --from-hf) and
// the float conversion of every tensor it accepts. A malformed file must be a
// DataError naming it.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "fuzz_input.h"
#include "train/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = moe::fuzz::write_file("model.safetensors", data, size);
  try {
    const moe::SafeTensorFile f = moe::read_safetensors(path);
    for (const auto& [name, t] : f.tensors) {
      size_t numel = 1;
      for (int64_t d : t.shape) numel *= size_t(d);
      std::vector<double> out(numel);
      try {
        moe::copy_float_tensor(t, out.data(), numel, name);
      } catch (const moe::DataError&) {  // an I64 tensor, say
      }
    }
  } catch (const moe::DataError&) {
  }
  return 0;
}
