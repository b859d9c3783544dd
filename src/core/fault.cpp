#include "core/fault.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <sstream>

namespace moe {

std::optional<std::string> injected_fault(const std::string& point) {
  const char* spec = std::getenv("MOE_FAULT_INJECTION");
  if (!spec) return std::nullopt;
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ',')) {
    const size_t eq = item.find('=');
    if (item.substr(0, eq) != point) continue;
    spdlog::warn("MOE_FAULT_INJECTION: fault {} is armed (a test's fault injection)", item);
    return eq == std::string::npos ? std::string() : item.substr(eq + 1);
  }
  return std::nullopt;
}

}  // namespace moe
