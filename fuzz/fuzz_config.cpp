// Fuzz target: the YAML config loader with a --set override. The input's
// first line is one `--set` argument (key.path=value), the rest the YAML
// text. Bad input must be a ConfigError (an InputError): anything else that
// escapes, and any crash or sanitizer report, is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t nl = text.find('\n');
  std::vector<std::string> overrides;
  std::string yaml = text;
  if (nl != std::string::npos) {
    if (nl > 0) overrides.push_back(text.substr(0, nl));
    yaml = text.substr(nl + 1);
  }
  try {
    const moe::Config c = moe::parse_config(yaml, overrides, 1);
    // A config that loads writes out as YAML that loads to the same config.
    const std::string again = moe::config_to_yaml(c);
    if (moe::config_to_yaml(moe::parse_config(again, {}, 1)) != again) __builtin_trap();
  } catch (const moe::InputError&) {
  }
  return 0;
}
