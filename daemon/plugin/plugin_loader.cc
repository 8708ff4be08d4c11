#include "daemon/plugin/plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>

#include <cstdio>
#include <cstring>

#include "daemon/plugin/plugin_api.h"

namespace kqd {

// A dlopen handle, closed when the loader goes.
struct PluginLoader::Handle {
  explicit Handle(void* h) : handle(h) {}
  ~Handle() {
    if (handle) dlclose(handle);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  void* handle;
};

namespace {

// What a plug-in sees of the daemon while its init runs.
class Host : public PluginHost {
 public:
  Host(Runtime* runtime, std::vector<std::string>* names) : runtime_(runtime), names_(names) {}
  Runtime* runtime() override { return runtime_; }
  int RegisterFilter(const std::string& name, std::shared_ptr<FilterOps> ops,
                     uint32_t* number) override {
    int err = runtime_->filters().Register(name, std::move(ops), number);
    if (err == 0) names_->push_back(name);
    return err;
  }
  void Log(const std::string& message) override {
    std::fprintf(stderr, "kqueued: plugin: %s\n", message.c_str());
  }

 private:
  Runtime* runtime_;
  std::vector<std::string>* names_;
};

}  // namespace

PluginLoader::PluginLoader(Runtime* runtime) : runtime_(runtime) {}

PluginLoader::~PluginLoader() {
  // Filters go first: their FilterOps objects' code lives in the objects.
  for (const std::string& name : names_) runtime_->filters().Unregister(name);
}

bool PluginLoader::Load(const std::string& path, std::string* error) {
  // RTLD_NOW: an unresolved symbol fails here, not in the middle of a kevent.
  auto handle = std::make_unique<Handle>(dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!handle->handle) {
    *error = std::string("cannot load plugin: ") + dlerror();
    return false;
  }
  using InitFn = int (*)(PluginHost*, uint32_t);
  auto init = reinterpret_cast<InitFn>(dlsym(handle->handle, "kqueued_plugin_init"));
  if (!init) {
    *error = path + ": not a kqueued plugin (no kqueued_plugin_init)";
    return false;
  }
  Host host(runtime_, &names_);
  if (int err = init(&host, KQUEUED_PLUGIN_ABI_VERSION)) {
    *error = path + ": plugin init failed: " + std::strerror(err);
    return false;
  }
  handles_.push_back(std::move(handle));
  return true;
}

}  // namespace kqd
