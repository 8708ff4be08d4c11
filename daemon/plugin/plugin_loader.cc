#include "daemon/plugin/plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>

#include <cstring>

#include "daemon/plugin/plugin_api.h"

namespace kqd {
namespace {

// What a plug-in sees of the daemon while its init runs.
class Host : public PluginHost {
 public:
  Host(Runtime* runtime, const std::string* path, std::vector<std::string>* names)
      : runtime_(runtime), path_(path), names_(names) {}
  Runtime* runtime() override { return runtime_; }
  int RegisterFilter(const std::string& name, std::shared_ptr<FilterOps> ops,
                     uint32_t* number) override {
    int err = runtime_->filters().Register(name, std::move(ops), number);
    if (err == 0) names_->push_back(name);
    return err;
  }
  // Through the daemon's logger, like every other line the daemon writes
  // (stderr or syslog, at the configured level).
  void Log(const std::string& message) override {
    runtime_->log().Log(LogLevel::kNotice, "plugin %s: %s", path_->c_str(), message.c_str());
  }

 private:
  Runtime* runtime_;
  const std::string* path_;
  std::vector<std::string>* names_;
};

}  // namespace

PluginLoader::PluginLoader(Runtime* runtime) : runtime_(runtime) {}

PluginLoader::~PluginLoader() {
  for (Loaded& object : loaded_) Unload(&object);
}

bool PluginLoader::Unload(Loaded* object) {
  // Filters go first: their FilterOps objects' code lives in the object.
  bool in_use = false;
  for (const std::string& name : object->filters) {
    const int err = runtime_->filters().Unregister(name);
    if (err == 0) continue;
    in_use = true;
    runtime_->log().Log(LogLevel::kWarning,
                        "plugin %s: filter %s not unregistered (%s); the plugin stays loaded",
                        object->path.c_str(), name.c_str(), std::strerror(err));
  }
  if (in_use) return false;
  object->filters.clear();
  if (dlclose(object->handle) != 0) {
    const char* why = dlerror();
    runtime_->log().Log(LogLevel::kWarning, "plugin %s: dlclose failed: %s",
                        object->path.c_str(), why != nullptr ? why : "unknown error");
    return false;
  }
  object->handle = nullptr;
  return true;
}

bool PluginLoader::Load(const std::string& path, std::string* error) {
  Loaded object;
  object.path = path;
  // RTLD_NOW: an unresolved symbol fails here, not in the middle of a kevent.
  object.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (object.handle == nullptr) {
    *error = std::string("cannot load plugin: ") + dlerror();
    return false;
  }
  using InitFn = int (*)(PluginHost*, uint32_t);
  auto init = reinterpret_cast<InitFn>(dlsym(object.handle, "kqueued_plugin_init"));
  if (!init) {
    *error = path + ": not a kqueued plugin (no kqueued_plugin_init)";
    Unload(&object);
    return false;
  }
  Host host(runtime_, &object.path, &object.filters);
  if (int err = init(&host, KQUEUED_PLUGIN_ABI_VERSION)) {
    *error = path + ": plugin init failed: " + std::strerror(err);
    // What it registered before failing must not outlive its code.
    Unload(&object);
    return false;
  }
  loaded_.push_back(std::move(object));
  return true;
}

}  // namespace kqd
