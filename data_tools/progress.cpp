#include "data_tools/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace moe::data {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

std::string human_count(double n) {
  const char* units[] = {"", "k", "M", "G", "T"};
  int u = 0;
  while (n >= 1000 && u < 4) {
    n /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f}", n) : fmt::format("{:.2f}{}", n, units[u]);
}

std::string human_seconds(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}h{:02}m", t / 3600, (t / 60) % 60);
}

Progress::Progress(std::string label, uint64_t total_bytes, std::string items, bool with_tokens)
    : label_(std::move(label)),
      items_(std::move(items)),
      total_(total_bytes),
      with_tokens_(with_tokens),
      tty_(::isatty(2) == 1) {
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (tty_ && drawn_ && !finished_) std::fputs("\r\x1b[K", stderr);
}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(uint64_t bytes, uint64_t docs, uint64_t tokens) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.25 : 5.0)) return;
  last_ = now;
  draw(bytes, docs, tokens, false);
}

void Progress::finish(uint64_t bytes, uint64_t docs, uint64_t tokens) {
  if (finished_) return;
  // A non-terminal log gets no final copy of the summary line that follows.
  if (tty_) draw(bytes, docs, tokens, true);
  finished_ = true;
}

void Progress::draw(uint64_t bytes, uint64_t docs, uint64_t tokens, bool final) {
  const double t = seconds();
  const double rate = t > 0 ? double(bytes) / t : 0;
  std::string line = label_ + ": ";
  if (total_ > 0) {
    line += fmt::format("{} / {} ({:.1f}%)", human_bytes(double(bytes)),
                        human_bytes(double(total_)), 100.0 * double(bytes) / double(total_));
  } else {
    line += human_bytes(double(bytes));
  }
  line += fmt::format(" | {} {}", human_count(double(docs)), items_);
  if (with_tokens_) line += fmt::format(" | {} tokens", human_count(double(tokens)));
  line += fmt::format(" | {:.1f} MB/s", rate / 1e6);
  if (!final && total_ > 0 && rate > 0 && bytes <= total_)
    line += " | ETA " + human_seconds(double(total_ - bytes) / rate);
  else if (final)
    line += " | " + human_seconds(t);
  if (tty_) {
    std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace moe::data
