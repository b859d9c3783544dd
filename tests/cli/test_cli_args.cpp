// The command lines of every program (src/apps/cli.h, CLI11): --help lists
// each option and exits 0, --version prints the version, and every bad
// argument is one line naming the option with exit code 2. The validators are
// also checked directly against hand-picked texts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/cli.h"
#include "support/command.h"

namespace {

using moe::test::CommandResult;
using moe::test::expect_one_line_error;

CommandResult run(const std::string& program, const std::string& args) {
  return moe::test::run_command(std::string(MOE_BINARY_DIR) + "/" + program + " " + args);
}

const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";

void expect_help_lists(const std::string& program, const std::string& args,
                       const std::vector<std::string>& options) {
  const CommandResult r = run(program, args);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("Usage: " + program), std::string::npos) << r.out;
  for (const std::string& o : options)
    EXPECT_NE(r.out.find("  " + o + " "), std::string::npos) << program << " lacks " << o;
}

TEST(CliArgs, HelpListsEveryOption) {
  expect_help_lists("moe-train", "--help",
                    {"--config", "--set", "--resume", "--plan", "--world-size", "--print-config",
                     "--with-meta", "--version", "-h,--help"});
  expect_help_lists("moe-eval", "-h",
                    {"--checkpoint", "--data", "--max-tokens", "--batch", "--output", "--threads",
                     "--backend"});
  expect_help_lists("moe-bench", "--help",
                    {"--config", "--set", "--steps", "--warmup", "--backend", "--peak-tflops",
                     "--json", "--op", "--expect"});
  expect_help_lists("moe-export", "--help",
                    {"--checkpoint", "--output", "--dtype", "--tokenizer", "--max-shard-mb",
                     "--from-hf", "--config"});
  expect_help_lists("moe-data", "--help", {"tokenizer-train", "prepare"});
  expect_help_lists("moe-data", "tokenizer-train --help",
                    {"--input", "--vocab-size", "--output", "--max-sentences", "--seed",
                     "--threads", "--character-coverage", "--text-field", "--skip-bad-lines"});
  expect_help_lists("moe-data", "prepare --help",
                    {"--tokenizer", "--input", "--output", "--val-fraction", "--seed", "--threads",
                     "--shard-tokens", "--text-field", "--txt-docs", "--skip-bad-lines",
                     "--force"});
}

TEST(CliArgs, VersionIsTheProjectVersion) {
  for (const char* program : {"moe-train", "moe-eval", "moe-bench", "moe-export", "moe-data"}) {
    const CommandResult r = run(program, "--version");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, std::string(program) + " " + MOE_VERSION + "\n");
  }
}

TEST(CliArgs, BadArgumentsAreOneLineNamingTheOption) {
  // Unknown options, missing values and required options.
  expect_one_line_error(run("moe-eval", "--checkpoint x --bogus 1"), "--bogus");
  expect_one_line_error(run("moe-eval", ""), "--checkpoint is required");
  expect_one_line_error(run("moe-export", "--checkpoint x"), "--output is required");
  expect_one_line_error(run("moe-bench", "--config " + kTiny + " --steps"), "--steps");
  // Values checked whole and in range before they are used.
  expect_one_line_error(run("moe-bench", "--config " + kTiny + " --steps 0"),
                        "--steps: expected an integer >= 1, got '0'");
  expect_one_line_error(run("moe-bench", "--config " + kTiny + " --warmup 3x"),
                        "--warmup: expected an integer >= 0, got '3x'");
  expect_one_line_error(run("moe-bench", "--config " + kTiny + " --steps 99999999999999999999"),
                        "got '99999999999999999999'");
  expect_one_line_error(run("moe-bench", "--config " + kTiny + " --peak-tflops -3"),
                        "--peak-tflops: expected a number > 0, got '-3'");
  expect_one_line_error(run("moe-bench", "--config " + kTiny + " --backend tpu"), "--backend");
  expect_one_line_error(run("moe-eval", "--checkpoint x --threads 5000"),
                        "--threads: expected an integer in [0, 4096], got '5000'");
  expect_one_line_error(run("moe-export", "--checkpoint x --output y --dtype fp8"), "--dtype");
  expect_one_line_error(run("moe-export", "--checkpoint x --output y --max-shard-mb 0"),
                        "--max-shard-mb: expected a number in [1e-06, 1000000000], got '0'");
  expect_one_line_error(run("moe-export", "--checkpoint x --output y --max-shard-mb 1e300"),
                        "got '1e300'");
  // A single-valued option given twice, and a stray word after --set's value.
  expect_one_line_error(run("moe-train", "--config a.yaml --config b.yaml"), "--config");
  expect_one_line_error(run("moe-train", "--config " + kTiny + " --set train.steps=1 extra"),
                        "extra");
  // moe-data: the command is named, and errors point at its own --help.
  expect_one_line_error(run("moe-data", ""), "missing command");
  expect_one_line_error(run("moe-data", "tokenise"), "unknown command 'tokenise'");
  expect_one_line_error(
      run("moe-data", "tokenizer-train --input a.txt --output m --vocab-size 4"),
      "--vocab-size: expected an integer in [8, 1073741824], got '4' (see moe-data "
      "tokenizer-train --help)");
  expect_one_line_error(run("moe-data", "prepare --tokenizer m --input a --output o "
                                        "--txt-docs lines"),
                        "--txt-docs");
  expect_one_line_error(run("moe-data", "prepare --tokenizer m --input a --output o "
                                        "--val-fraction 1"),
                        "--val-fraction must be below 1");
  // An option of the other command is unknown here.
  expect_one_line_error(run("moe-data", "prepare --tokenizer m --input a --output o "
                                        "--character-coverage 1"),
                        "--character-coverage");
}

TEST(CliArgs, RepeatedSetFlagsAllApply) {
  // Two --set flags both apply: --print-config shows each.
  const CommandResult r = run("moe-train", "--config " + kTiny +
                                               " --set train.steps=7 --set=train.seed=99 "
                                               "--print-config");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("steps: 7"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("seed: 99"), std::string::npos) << r.out;
}

// Runs a validator on a text: "" when accepted, else its message.
std::string check(const CLI::Validator& v, std::string text) { return v(text); }

TEST(CliArgs, ValidatorsReadTheWholeText) {
  const CLI::Validator at_least_1 = moe::cli::integer_at_least(1);
  EXPECT_EQ(check(at_least_1, "1"), "");
  EXPECT_EQ(check(at_least_1, "9223372036854775807"), "");
  EXPECT_EQ(check(at_least_1, "0"), "expected an integer >= 1, got '0'");
  EXPECT_NE(check(at_least_1, "9223372036854775808"), "");  // one past INT64_MAX
  EXPECT_NE(check(at_least_1, "12x"), "");
  EXPECT_NE(check(at_least_1, " 12"), "");
  EXPECT_NE(check(at_least_1, ""), "");
  EXPECT_NE(check(at_least_1, "1.0"), "");
  const CLI::Validator small = moe::cli::integer_in(-2, 2);
  EXPECT_EQ(check(small, "-2"), "");
  EXPECT_EQ(check(small, "3"), "expected an integer in [-2, 2], got '3'");
  const CLI::Validator unit = moe::cli::number_in(0.5, 1.0);
  EXPECT_EQ(check(unit, "0.5"), "");
  EXPECT_EQ(check(unit, "1e0"), "");
  EXPECT_EQ(check(unit, "0.4999"), "expected a number in [0.5, 1], got '0.4999'");
  EXPECT_NE(check(unit, "nan"), "");
  EXPECT_NE(check(unit, "0.75abc"), "");
  const CLI::Validator positive = moe::cli::positive_number();
  EXPECT_EQ(check(positive, "1e-3"), "");
  EXPECT_NE(check(positive, "0"), "");
  EXPECT_NE(check(positive, "inf"), "");
  EXPECT_NE(check(positive, "1e999"), "");
}

}  // namespace
