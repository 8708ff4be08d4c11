// Entry point of the CUSE tier's test binary: the device is the one the VM's
// kqueued serves through CUSE, never a private FUSE daemon.
#include <stdlib.h>

#include <cstdio>

#include "gtest/gtest.h"

int main(int argc, char** argv) {
  if (!getenv("KQUEUED_EXTERNAL_DEVICE")) setenv("KQUEUED_EXTERNAL_DEVICE", "/dev/kqueue", 1);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  const auto* u = ::testing::UnitTest::GetInstance();
  std::printf("%d passed, %d failed\n", u->successful_test_count(), u->failed_test_count());
  return rc;
}
