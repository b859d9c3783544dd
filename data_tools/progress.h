// A progress line on stderr: redrawn in place with '\r' at most 4 times a
// second on a terminal, a plain line every few seconds otherwise (logs).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace moe::data {

std::string human_bytes(double bytes);      // "12.3 MB"
std::string human_count(double n);          // "12.3M"
std::string human_seconds(double seconds);  // "1m05s"

class Progress {
 public:
  // total_bytes: the size of all inputs on disk (0: unknown, no % or ETA);
  // items: what the second counter counts ("docs", "sentences"); tokens are
  // shown when with_tokens.
  Progress(std::string label, uint64_t total_bytes, std::string items, bool with_tokens);
  ~Progress();  // clears an unfinished line (an error message follows)
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Cheap when called often: draws only when the refresh interval is over.
  void update(uint64_t bytes, uint64_t items, uint64_t tokens = 0);
  // Draws the final state and ends the line.
  void finish(uint64_t bytes, uint64_t items, uint64_t tokens = 0);
  double seconds() const;

 private:
  void draw(uint64_t bytes, uint64_t docs, uint64_t tokens, bool final);
  std::string label_, items_;
  uint64_t total_;
  bool with_tokens_;
  bool tty_;
  bool drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace moe::data
