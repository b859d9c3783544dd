// Runs a shell command from a test and captures what a user would see.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace moe::test {

struct CommandResult {
  int code = -1;     // exit code (-1: killed by a signal or not started)
  std::string out;   // stdout + stderr
  double seconds = 0;
};

inline CommandResult run_command(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// Bad input: exit code 2 and exactly one line that contains `needle`.
inline void expect_one_line_error(const CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << "want '" << needle << "' in: " << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

}  // namespace moe::test
