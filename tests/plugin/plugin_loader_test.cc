// PluginLoader in-process: a plug-in's code stays mapped exactly as long as
// one of its filters may still be used, and an init that fails leaves none
// of its filters behind.
#include "daemon/plugin/plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/core_test_support.h"
#include "tests/support/ev.h"
#include "tests/support/runfiles.h"

namespace kqd {
namespace testing {
namespace {

std::string PluginPath() { return RunfilePath("tests/plugin/test_plugin.so"); }

// Whether the object at `path` is mapped in this process now.
bool IsLoaded(const std::string& path) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (h == nullptr) return false;
  dlclose(h);  // RTLD_NOLOAD took a reference too
  return true;
}

TEST(PluginLoaderTest, FailedInitUnregistersWhatItRegistered) {
  TestRuntime rt;
  PluginLoader loader(rt.get());
  const std::string path = RunfilePath("tests/plugin/failing_test_plugin.so");
  std::string why;
  ASSERT_FALSE(loader.Load(path, &why));
  EXPECT_NE(why.find("plugin init failed"), std::string::npos) << why;
  uint32_t number = 0;
  // Its FilterOps' code would be gone with the object: the filter must be too.
  EXPECT_EQ(rt.get()->filters().NumberOf("loadertest_fail", &number), ENOENT);
  EXPECT_FALSE(IsLoaded(path));
}

TEST(PluginLoaderTest, UnusedPluginIsUnregisteredAndUnloaded) {
  TestRuntime rt;
  const std::string path = PluginPath();
  {
    PluginLoader loader(rt.get());
    std::string why;
    ASSERT_TRUE(loader.Load(path, &why)) << why;
    uint32_t number = 0;
    EXPECT_EQ(rt.get()->filters().NumberOf("loadertest", &number), 0);
    EXPECT_TRUE(IsLoaded(path));
  }
  uint32_t number = 0;
  EXPECT_EQ(rt.get()->filters().NumberOf("loadertest", &number), ENOENT);
  EXPECT_FALSE(IsLoaded(path));
}

TEST(PluginLoaderTest, PluginLinesGoThroughTheDaemonsLogger) {
  // A plug-in's Host::Log is a daemon log line: it obeys the level (and
  // the sink: syslog for a detached daemon), and names the plug-in.
  TestRuntime rt;
  const std::string path = PluginPath();
  {
    rt.get()->log().set_level(LogLevel::kWarning);
    ::testing::internal::CaptureStderr();
    PluginLoader loader(rt.get());
    std::string why;
    ASSERT_TRUE(loader.Load(path, &why)) << why;
    EXPECT_EQ(::testing::internal::GetCapturedStderr().find("says hello"), std::string::npos);
  }
  {
    rt.get()->log().set_level(LogLevel::kNotice);
    ::testing::internal::CaptureStderr();
    PluginLoader loader(rt.get());
    std::string why;
    ASSERT_TRUE(loader.Load(path, &why)) << why;
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("plugin " + path + ": loadertest says hello"), std::string::npos) << err;
  }
}

TEST(PluginLoaderTest, PluginStaysLoadedWhileItsFilterIsInUse) {
  TestRuntime rt;
  const std::string path = PluginPath();
  auto q = rt.NewQueue();
  uint32_t number = 0;
  {
    PluginLoader loader(rt.get());
    std::string why;
    ASSERT_TRUE(loader.Load(path, &why)) << why;
    ASSERT_EQ(rt.get()->filters().NumberOf("loadertest", &number), 0);
    ASSERT_EQ(q->Change(Ev(1, number, EV_ADD)), 0);
  }
  // Unregister said EBUSY: dlclosing now would unmap the knote's ops.
  EXPECT_TRUE(IsLoaded(path));
  // The knote's Detach runs the plug-in's code.
  EXPECT_EQ(q->Change(Ev(1, number, EV_DELETE)), 0);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
