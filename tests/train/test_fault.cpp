// core/fault.h: MOE_FAULT_INJECTION arms exactly the listed points, with
// their values, and nothing when it is unset.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/fault.h"

namespace moe {
namespace {

TEST(FaultInjection, ArmsOnlyTheListedPoints) {
  ::unsetenv("MOE_FAULT_INJECTION");
  EXPECT_FALSE(injected_fault("checkpoint.before_rename"));
  ::setenv("MOE_FAULT_INJECTION", "checkpoint.before_rename,train.fail_rank=3", 1);
  EXPECT_EQ(injected_fault("checkpoint.before_rename"), std::string());
  EXPECT_EQ(injected_fault("train.fail_rank"), std::string("3"));
  EXPECT_FALSE(injected_fault("train.fail"));             // a prefix is not the point
  EXPECT_FALSE(injected_fault("checkpoint.before"));
  ::setenv("MOE_FAULT_INJECTION", "", 1);
  EXPECT_FALSE(injected_fault("train.fail_rank"));
  ::unsetenv("MOE_FAULT_INJECTION");
}

}  // namespace
}  // namespace moe
