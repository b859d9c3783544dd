#include "comm/watchdog.h"

namespace moe {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Watchdog::Watchdog(double timeout_seconds, std::function<void(double)> on_timeout)
    : timeout_(timeout_seconds), on_timeout_(std::move(on_timeout)), last_beat_ns_(now_ns()) {
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::beat() { last_beat_ns_.store(now_ns()); }

void Watchdog::loop() {
  const auto tick = std::chrono::milliseconds(timeout_ < 5 ? 20 : 1000);
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, tick, [this] { return stop_; })) {
    const double idle = double(now_ns() - last_beat_ns_.load()) * 1e-9;
    if (idle > timeout_) {
      on_timeout_(idle);
      return;
    }
  }
}

}  // namespace moe
