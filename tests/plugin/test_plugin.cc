// A minimal filter plug-in for plugin_loader_test: one filter whose knotes
// never fire. Built twice: as test_plugin.so (init succeeds) and, with
// KQD_TEST_PLUGIN_FAIL_INIT, as failing_test_plugin.so (init registers its
// filter, then fails).
#include <errno.h>

#include <memory>

#include "daemon/plugin/plugin_api.h"

namespace {

class QuietFilter : public kqd::FilterOps {
 public:
  int Attach(kqd::Knote&) override { return 0; }
  void Detach(kqd::Knote&) override {}
  bool Event(kqd::Knote&, long) override { return false; }
};

}  // namespace

extern "C" int kqueued_plugin_init(kqd::PluginHost* host, uint32_t abi_version) {
  if (abi_version != KQUEUED_PLUGIN_ABI_VERSION) return EINVAL;
  uint32_t number = 0;
#ifdef KQD_TEST_PLUGIN_FAIL_INIT
  host->RegisterFilter("loadertest_fail", std::make_shared<QuietFilter>(), &number);
  return ENODEV;
#else
  host->Log("loadertest says hello");
  return host->RegisterFilter("loadertest", std::make_shared<QuietFilter>(), &number);
#endif
}
