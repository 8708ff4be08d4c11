// Runs bsd_style_test.c (a plain C program built as //tests/client:bsd_style)
// against the private daemon and checks its verdict. The program finds the
// daemon through $KQUEUE_DEVICE, which SharedDaemon() sets.
#include <sys/wait.h>

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "tests/client/client_test_support.h"

namespace kqd {
namespace client_test {
namespace {

class BsdStyleTest : public ClientTest {};

TEST_F(BsdStyleTest, PassesAgainstTheDaemon) {
  Child child({kqd::testing::RunfilePath("tests/client/bsd_style")});
  std::string output = child.ReadAll(std::chrono::seconds(60));
  int status = 0;
  ASSERT_TRUE(child.Wait(&status, std::chrono::seconds(10))) << output;
  // Shown in the test log either way: which cases passed or were skipped.
  std::printf("%s", output.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_NE(output.find(" passed, 0 failed\n"), std::string::npos) << output;
  if (output.find(" skipped\n") != std::string::npos)
    RecordProperty("skipped_cases", "some filters are not implemented by the daemon yet");
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
