// PluginLoader: dlopens filter plug-ins and runs their init function.
// Loaded objects stay loaded for the loader's lifetime: their code backs
// FilterOps that knotes may still use.
#ifndef KQUEUED_DAEMON_PLUGIN_PLUGIN_LOADER_H_
#define KQUEUED_DAEMON_PLUGIN_PLUGIN_LOADER_H_

#include <memory>
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
  // (missing file, missing kqueued_plugin_init, ABI mismatch, init failure).
  bool Load(const std::string& path, std::string* error);

 private:
  struct Handle;
  Runtime* const runtime_;
  std::vector<std::unique_ptr<Handle>> handles_;
  std::vector<std::string> names_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_PLUGIN_PLUGIN_LOADER_H_
