#include "data_tools/args.h"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace moe::data {

Args::Args(std::string command, std::vector<Option> options, int argc, char** argv, int first)
    : command_(std::move(command)), options_(std::move(options)) {
  const std::string see = " (see moe-data " + command_ + " --help)";
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2)
      throw InputError(command_ + ": unexpected argument '" + a + "'" + see);
    std::string name = a.substr(2), inline_value;
    const size_t eq = name.find('=');
    const bool has_inline = eq != std::string::npos;
    if (has_inline) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Option* opt = find(name);
    if (!opt) throw InputError(command_ + ": unknown option '--" + name + "'" + see);
    auto& vals = values_[name];
    if (opt->kind == Kind::Flag) {
      if (has_inline) throw InputError(command_ + ": option --" + name + " takes no value" + see);
      vals.push_back("1");
    } else if (has_inline) {
      vals.push_back(inline_value);
    } else if (opt->kind == Kind::Value) {
      if (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0)
        throw InputError(command_ + ": option --" + name + " needs a value" + see);
      vals.push_back(argv[++i]);
    } else {  // a list takes every following argument up to the next option
      const size_t before = vals.size();
      while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
        vals.push_back(argv[++i]);
      if (vals.size() == before)
        throw InputError(command_ + ": option --" + name + " needs at least one value" + see);
    }
    if (opt->kind == Kind::Value && vals.size() > 1)
      throw InputError(command_ + ": option --" + name + " given twice" + see);
  }
}

const Args::Option* Args::find(const std::string& name) const {
  for (const auto& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

std::string Args::str(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.front();
}

std::string Args::required(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.front().empty())
    throw InputError(command_ + ": --" + name + " is required (see moe-data " + command_ +
                     " --help)");
  return it->second.front();
}

std::vector<std::string> Args::list(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end())
    throw InputError(command_ + ": --" + name + " is required (see moe-data " + command_ +
                     " --help)");
  return it->second;
}

int64_t Args::integer(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
  if (!has(name)) return fallback;
  const std::string s = str(name, "");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
    throw InputError(command_ + ": --" + name + " expects an integer in [" + std::to_string(lo) +
                     ", " + std::to_string(hi) + "], got '" + s + "'");
  return v;
}

double Args::real(const std::string& name, double fallback, double lo, double hi) const {
  if (!has(name)) return fallback;
  const std::string s = str(name, "");
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
    throw InputError(
        fmt::format("{}: --{} expects a number in [{}, {}], got '{}'", command_, name, lo, hi, s));
  return v;
}

}  // namespace moe::data
