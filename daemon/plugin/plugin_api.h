// The plug-in interface: filters loaded into kqueued at run time, as the
// seed's kfilter_register lets kernel modules add filters.
//
//   kqueued --filter-plugin /path/to/plugin.so
//
// A plug-in is a shared object built against this tree's headers with the
// same compiler (the interface is C++: FilterOps, Knote, Reactor). It
// exports one C function, kqueued_plugin_init, which registers its filters
// through the PluginHost. They are numbered from EVFILT_SYSCOUNT up, appear
// in KFILTER_BYNAME / KFILTER_BYFILTER, and work in kevent like any other.
// The daemon is linked with -rdynamic so plug-ins resolve the core's
// symbols (Knote::Notify, Reactor, ...) from it.
#ifndef KQUEUED_DAEMON_PLUGIN_PLUGIN_API_H_
#define KQUEUED_DAEMON_PLUGIN_PLUGIN_API_H_

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/core/filter_ops.h"
#include "daemon/core/runtime.h"

// Bumped whenever FilterOps, Knote, Reactor or this file change
// incompatibly; a plug-in built for another version is refused.
// 2: FilterOps::ChangeDone (a new virtual: the vtable changed).
#define KQUEUED_PLUGIN_ABI_VERSION 2u

namespace kqd {

class PluginHost {
 public:
  virtual ~PluginHost() = default;
  // The runtime the filters will serve (its reactor drives event sources).
  virtual Runtime* runtime() = 0;
  // Registers a named filter; returns 0 and its number, or an errno
  // (EEXIST: the name is taken).
  virtual int RegisterFilter(const std::string& name, std::shared_ptr<FilterOps> ops,
                             uint32_t* number) = 0;
  // A line in the daemon's log (its level and sink: stderr, or syslog
  // when detached), at notice level, prefixed with the plug-in's path.
  virtual void Log(const std::string& message) = 0;
};

}  // namespace kqd

// Exported by every plug-in. `abi_version` is KQUEUED_PLUGIN_ABI_VERSION of
// the daemon; return 0, or an errno to make the daemon refuse to start.
extern "C" int kqueued_plugin_init(kqd::PluginHost* host, uint32_t abi_version);

#endif  // KQUEUED_DAEMON_PLUGIN_PLUGIN_API_H_
