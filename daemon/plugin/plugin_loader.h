// PluginLoader: dlopens filter plug-ins and runs their init function.
// A loaded object stays loaded while any of its filters is registered: its
// code backs FilterOps that knotes may still use. When the loader goes (or
// an init fails) the object's filters are unregistered and the object is
// dlclosed only if every one of them could be; a filter still in use
// (EBUSY), or a dlclose that fails, is logged and the object stays mapped.
#ifndef KQUEUED_DAEMON_PLUGIN_PLUGIN_LOADER_H_
#define KQUEUED_DAEMON_PLUGIN_PLUGIN_LOADER_H_

#include <string>
#include <vector>

#include "daemon/core/runtime.h"

namespace kqd {

class PluginLoader {
 public:
  explicit PluginLoader(Runtime* runtime);
  ~PluginLoader();
  PluginLoader(const PluginLoader&) = delete;
  PluginLoader& operator=(const PluginLoader&) = delete;

  // Loads `path` and registers its filters. False with a message in *error
  // (missing file, missing kqueued_plugin_init, ABI mismatch, init failure);
  // then whatever the init registered is unregistered again.
  bool Load(const std::string& path, std::string* error);

 private:
  struct Loaded {
    std::string path;
    void* handle = nullptr;            // dlopen's
    std::vector<std::string> filters;  // registered by its init
  };
  // Unregisters the object's filters and dlcloses it if none is left in
  // use. Returns false (and logs why) if it stays loaded.
  bool Unload(Loaded* object);

  Runtime* const runtime_;
  std::vector<Loaded> loaded_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_PLUGIN_PLUGIN_LOADER_H_
