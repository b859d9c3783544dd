// The job watchdog fires when no progress is reported for its timeout, and
// never while progress keeps coming.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "comm/watchdog.h"

namespace moe {
namespace {

using namespace std::chrono_literals;

TEST(Watchdog, FiresAfterTheTimeoutWithoutProgress) {
  std::atomic<int> fired{0};
  std::atomic<double> idle_seen{0};
  Watchdog w(0.2, [&](double idle) {
    idle_seen = idle;
    ++fired;
  });
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(fired.load(), 1);  // once, then the thread ends
  EXPECT_GT(idle_seen.load(), 0.2);
}

TEST(Watchdog, QuietWhileBeating) {
  std::atomic<int> fired{0};
  {
    Watchdog w(0.3, [&](double) { ++fired; });
    for (int i = 0; i < 12; ++i) {
      std::this_thread::sleep_for(50ms);
      w.beat();
    }
  }  // destructor stops the thread promptly
  EXPECT_EQ(fired.load(), 0);
}

}  // namespace
}  // namespace moe
