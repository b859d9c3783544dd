// Command lines of the programs, parsed by CLI11 (Debian's libcli11-dev): the
// --help text is generated from the options, --version is uniform, and values
// are validated before use. Every problem is one line naming the option and
// exit code 2 (parse() throws an InputError; run_main turns it into the exit).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace moe::cli {

// Sets up `app` as program `program` (e.g. "moe-train"): --help, --version,
// the help layout shared by every program, and `footer` after the options.
void configure(CLI::App& app, const std::string& program, const std::string& footer = "");

// Parses argv. Returns false when --help or --version was asked for: the text
// is printed to stdout and the program should exit 0. Anything wrong is an
// InputError: CLI11's message (which names the option) and where to look,
// e.g. "--steps: expected an integer >= 1, got 'x' (see moe-bench --help)".
bool parse(CLI::App& app, int argc, char** argv);

// Validators whose messages say what was expected and what was given. They
// check the whole text, so "12x" or an out-of-range "99999999999999999999" is
// refused rather than read as a prefix or saturated.
CLI::Validator integer_in(int64_t lo, int64_t hi);  // an integer in [lo, hi]
CLI::Validator integer_at_least(int64_t lo);        // an integer >= lo
CLI::Validator number_in(double lo, double hi);     // a finite number in [lo, hi]
CLI::Validator positive_number();                   // a finite number > 0

}  // namespace moe::cli
