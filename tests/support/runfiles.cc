#include "tests/support/runfiles.h"

#include <stdlib.h>
#include <unistd.h>

namespace kqd {
namespace testing {

std::string RunfilePath(const std::string& relative) {
  std::string base;
  if (const char* s = getenv("TEST_SRCDIR")) base = s;
  std::string ws = "kqueued";
  if (const char* w = getenv("TEST_WORKSPACE")) ws = w;
  std::string candidate = base + "/" + ws + "/" + relative;
  if (access(candidate.c_str(), F_OK) == 0) return candidate;
  if (access(relative.c_str(), F_OK) == 0) return relative;
  return "bazel-bin/" + relative;
}

}  // namespace testing
}  // namespace kqd
