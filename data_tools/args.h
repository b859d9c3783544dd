// Command-line options of one moe-data subcommand: `--name VALUE`,
// `--name=VALUE`, flags, and list options (`--input A B C`, repeatable).
// Every problem is an InputError naming the option (exit code 2).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe::data {

class Args {
 public:
  enum class Kind { Value, List, Flag };
  struct Option {
    std::string name;  // without the leading "--"
    Kind kind;
  };

  // Parses argv[first..argc) for `command` (named in error messages).
  Args(std::string command, std::vector<Option> options, int argc, char** argv, int first);

  bool help() const { return help_; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool flag(const std::string& name) const { return has(name); }
  std::string str(const std::string& name, const std::string& fallback) const;
  std::string required(const std::string& name) const;
  std::vector<std::string> list(const std::string& name) const;  // required, non-empty
  int64_t integer(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  double real(const std::string& name, double fallback, double lo, double hi) const;

 private:
  const Option* find(const std::string& name) const;
  std::string command_;
  std::vector<Option> options_;
  std::map<std::string, std::vector<std::string>> values_;
  bool help_ = false;
};

}  // namespace moe::data
