#include "apps/cli.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>

#include "core/error.h"

namespace moe::cli {

namespace {

constexpr size_t kNameColumn = 24, kLineWidth = 100;

// CLI11's layout with option descriptions wrapped at kLineWidth (CLI11 2.1
// prints them on one line, however long); its own indentation of the lines
// after a '\n' does the rest.
class WrappingFormatter : public CLI::Formatter {
 public:
  WrappingFormatter() { column_width(kNameColumn); }
  std::string make_option_desc(const CLI::Option* opt) const override {
    return wrap(CLI::Formatter::make_option_desc(opt), kLineWidth - kNameColumn);
  }
  std::string make_description(const CLI::App* app) const override {
    const std::string text = app->get_description();
    return text.empty() ? "" : wrap(text, kLineWidth) + "\n";
  }

 private:
  static std::string wrap(const std::string& text, size_t width) {
    std::string out, word;
    size_t line = 0;
    std::istringstream words(text);
    while (words >> word) {
      if (line > 0 && line + 1 + word.size() > width) {
        out += '\n';
        line = 0;
      } else if (line > 0) {
        out += ' ';
        ++line;
      }
      out += word;
      line += word.size();
    }
    return out;
  }
};

}  // namespace

void configure(CLI::App& app, const std::string& program, const std::string& footer) {
  app.name(program);
  app.formatter(std::make_shared<WrappingFormatter>());
  app.set_help_flag("-h,--help", "print this help and exit");
  app.set_version_flag("--version", program + " " + MOE_VERSION, "print the version and exit");
  if (!footer.empty()) app.footer(footer);
}

bool parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return true;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help or --version: printed, then exit 0
      app.exit(e, std::cout, std::cerr);
      return false;
    }
    // The subcommand the error happened in, if any, for the pointer to its help.
    std::string where = app.get_name();
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    throw InputError(what + " (see " + where + " --help)");
  }
}

CLI::Validator integer_in(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) {
        int64_t v = 0;
        const char* end = text.data() + text.size();
        const auto [stop, ec] = std::from_chars(text.data(), end, v);
        if (ec == std::errc() && stop == end && v >= lo && v <= hi) return std::string();
        if (hi == std::numeric_limits<int64_t>::max())
          return fmt::format("expected an integer >= {}, got '{}'", lo, text);
        return fmt::format("expected an integer in [{}, {}], got '{}'", lo, hi, text);
      },
      "", "integer");
}

CLI::Validator integer_at_least(int64_t lo) {
  return integer_in(lo, std::numeric_limits<int64_t>::max());
}

namespace {
bool parse_finite(const std::string& text, double& v) {
  if (text.empty()) return false;
  char* stop = nullptr;
  errno = 0;
  v = std::strtod(text.c_str(), &stop);
  return *stop == '\0' && errno != ERANGE && std::isfinite(v);
}
}  // namespace

CLI::Validator number_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) {
        double v = 0;
        if (parse_finite(text, v) && v >= lo && v <= hi) return std::string();
        return fmt::format("expected a number in [{}, {}], got '{}'", lo, hi, text);
      },
      "", "number");
}

CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) {
        double v = 0;
        if (parse_finite(text, v) && v > 0) return std::string();
        return fmt::format("expected a number > 0, got '{}'", text);
      },
      "", "positive number");
}

}  // namespace moe::cli
