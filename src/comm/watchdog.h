// A hung peer (a rank stuck in a kernel, a dead node the transport has not
// noticed) leaves the other ranks waiting in a collective forever. The
// watchdog ends the whole job instead: if no training step completes for
// `timeout_seconds`, it calls on_timeout (moe-train: print, then abort the
// job). One background thread, woken once a second.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace moe {

class Watchdog {
 public:
  Watchdog(double timeout_seconds, std::function<void(double idle_seconds)> on_timeout);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void beat();  // progress was made

 private:
  void loop();

  const double timeout_;
  std::function<void(double)> on_timeout_;
  std::atomic<int64_t> last_beat_ns_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace moe
