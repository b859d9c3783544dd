// moe-train runs of the tiny model for the program-level gpu tests
// (test_gpu_cli.cpp, test_gpu_multirank.cpp): where the programs and configs
// are, a scratch directory, and a short run's per-step losses.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/command.h"

namespace moe::test {

// The programs and configs: the build tree, or an unpacked bundle
// (scripts/bundle.sh --with-tests: the test in bin/ beside the programs,
// configs/ beside bin/), so a GPU machine without our build tree runs it too.
inline std::string bin_dir() {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(MOE_BINARY_DIR) / "moe-train")) return MOE_BINARY_DIR;
  return fs::read_symlink("/proc/self/exe").parent_path().string();
}
inline std::string configs_dir() {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(MOE_SOURCE_DIR) / "configs")) return std::string(MOE_SOURCE_DIR) + "/configs";
  return (fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "configs").string();
}

// A fresh directory under /tmp named after the test and this process.
inline std::filesystem::path fresh_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / ("moe_gpu_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// `steps` steps of configs/tiny.yaml into d/<name> (a checkpoint at the last
// step in d/<name>/ckpt); returns the per-step losses. `launcher` prefixes
// the command (mpirun for multi-rank runs).
inline std::vector<double> train_tiny(const std::filesystem::path& d, const std::string& name,
                                      int steps, const std::string& sets,
                                      const std::string& launcher = "") {
  const std::filesystem::path out = d / name;
  const CommandResult r = run_command(
      launcher + bin_dir() + "/moe-train --config " + configs_dir() + "/tiny.yaml" +
      " --set train.steps=" + std::to_string(steps) + " --set log.out_dir=" + out.string() +
      " --set checkpoint.dir=" + (out / "ckpt").string() +
      " --set checkpoint.interval=" + std::to_string(steps) + " " + sets);
  EXPECT_EQ(r.code, 0) << r.out;
  std::vector<double> losses;
  std::ifstream f(out / "metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  EXPECT_EQ(losses.size(), size_t(steps)) << r.out;
  return losses;
}

}  // namespace moe::test
