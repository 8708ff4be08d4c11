// Where a test finds the files Bazel put in its runfiles (the daemon, the
// example programs).
#ifndef KQUEUED_TESTS_SUPPORT_RUNFILES_H_
#define KQUEUED_TESTS_SUPPORT_RUNFILES_H_

#include <string>

namespace kqd {
namespace testing {

// Path of a file in the test's runfiles, given relative to the workspace
// (e.g. "daemon/kqueued"): $TEST_SRCDIR/$TEST_WORKSPACE/relative when that
// exists, else `relative` itself (`bazel run` starts in the runfiles tree),
// else bazel-bin/relative.
std::string RunfilePath(const std::string& relative);

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_RUNFILES_H_
