// kqueued: serves BSD kqueue as the device /dev/kqueue to every process.
//
//   kqueued [--device PATH] [--transport auto|cuse|fuse] [--foreground]
//           [--log-level LEVEL] [--filter-plugin PLUGIN.so]...
//
// CUSE makes a real character device; where the kernel has no CUSE, a FUSE
// filesystem whose root is a regular file is mounted over PATH instead
// (same semantics). SIGTERM or SIGINT stop it cleanly. Under systemd
// (Type=notify, packaging/kqueued.service) it reports READY=1 once the
// device is served and STOPPING=1 when asked to stop. The manual is
// docs/man/kqueued.8.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/core/runtime.h"
#include "daemon/filters/system_filters.h"
#include "daemon/os/fd_limit.h"
#include "daemon/plugin/plugin_loader.h"
#include "daemon/service/kqueue_device.h"
#include "daemon/service/version.h"
#include "daemon/transport/transport.h"
#include "daemon/os/logger.h"
#include "daemon/util/scoped_fd.h"
#include "daemon/os/sd_notify.h"

namespace {

struct Options {
  std::string device = "/dev/kqueue";
  kqd::TransportKind transport = kqd::TransportKind::kAuto;
  bool foreground = false;
  kqd::LogLevel log_level = kqd::LogLevel::kNotice;
  std::vector<std::string> plugins;
};

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: kqueued [--device PATH] [--transport auto|cuse|fuse] "
               "[--foreground] [--log-level LEVEL]\n"
               "  --device PATH     where clients open the kqueue device "
               "(default /dev/kqueue)\n"
               "  --transport KIND  cuse: a character device (needs /dev/cuse);\n"
               "                    fuse: a FUSE file mounted over PATH;\n"
               "                    auto (default): cuse if /dev/cuse exists\n"
               "  --foreground      stay attached to the terminal (log to stderr;\n"
               "                    detached, the daemon logs to syslog)\n"
               "  --log-level LEVEL error, warning, notice (default), info or debug\n"
               "  --filter-plugin SO  load filters from a plug-in (repeatable)\n");
}

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--device") {
      if (!value(&o->device)) return false;
    } else if (a == "--transport") {
      if (!value(&v)) return false;
      if (!kqd::ParseTransportKind(v, &o->transport)) return false;
    } else if (a == "--filter-plugin") {
      if (!value(&v)) return false;
      o->plugins.push_back(v);
    } else if (a == "--log-level") {
      if (!value(&v)) return false;
      if (!kqd::ParseLogLevel(v, &o->log_level)) return false;
    } else if (a == "--foreground" || a == "-f") {
      o->foreground = true;
    } else if (a == "--help" || a == "-h") {
      Usage(stdout);
      std::exit(0);
    } else if (a == "--version") {
      std::printf("%s (ABI %u)\n", kqd::kDaemonVersion, KQ_ABI_VERSION);
      std::exit(0);
    } else {
      return false;
    }
  }
  if (o->device.empty()) return false;
  // A bare name ("kqueue") means a node in /dev, as CUSE names devices.
  if (o->device.find('/') == std::string::npos) o->device = "/dev/" + o->device;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!Parse(argc, argv, &opt)) {
    Usage(stderr);
    return 2;
  }
  // Without --foreground, detach once the device is ready: the parent exits
  // with the child's verdict, so `kqueued && use /dev/kqueue` is race-free.
  kqd::ScopedFd ready_write;
  if (!opt.foreground) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return 1;
    pid_t child = fork();
    if (child < 0) return 1;
    if (child > 0) {
      close(p[1]);
      char verdict = 1;
      ssize_t n = read(p[0], &verdict, 1);
      return (n == 1 && verdict == 0) ? 0 : 1;
    }
    close(p[0]);
    ready_write.reset(p[1]);
    setsid();
  }

  // Signals are taken synchronously by the main thread below; block them
  // before any thread starts so none of them gets one.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const rlim_t fd_budget = kqd::RaiseFdLimit();

  // Per-user limits sized to what this daemon can hold (docs/security.md).
  kqd::Runtime runtime(kqd::LimitConfig::ForFdBudget(
      fd_budget == 0 || fd_budget == RLIM_INFINITY ? 1024 : static_cast<uint64_t>(fd_budget)));
  kqd::Logger& log = runtime.log();
  log.set_level(opt.log_level);
  // Start-up errors go to stderr, where whoever started us sees them; a
  // detached daemon switches to syslog once it is serving.
  log.set_sink(kqd::Logger::Sink::kStderr);
  if (geteuid() != 0)
    log.Log(kqd::LogLevel::kWarning, "not root; other users' processes cannot be served");
  if (!runtime.reactor().ok()) {
    log.Log(kqd::LogLevel::kError, "cannot create the event loop: %s", std::strerror(errno));
    return 1;
  }
  kqd::RegisterSystemFilters(&runtime);
  runtime.reactor().Start();

  kqd::PluginLoader plugins(&runtime);
  for (const std::string& path : opt.plugins) {
    std::string why;
    if (!plugins.Load(path, &why)) {
      log.Log(kqd::LogLevel::kError, "%s", why.c_str());
      return 1;
    }
    log.Log(kqd::LogLevel::kInfo, "loaded filter plug-in %s", path.c_str());
  }

  kqd::KqueueDevice device(&runtime, opt.device);
  std::string error;
  auto transport = kqd::StartTransport(opt.transport, opt.device, &device, &error);
  if (!transport) {
    log.Log(kqd::LogLevel::kError, "%s", error.c_str());
    kqd::SdNotify("STATUS=failed: " + error);
    return 1;
  }
  log.Log(kqd::LogLevel::kNotice, "%s serving %s (%s)", kqd::kDaemonVersion,
          transport->device_path().c_str(), kqd::TransportKindName(transport->kind()));
  if (ready_write) {
    char ok = 0;
    ssize_t n = write(ready_write.get(), &ok, 1);
    (void)n;
    ready_write.reset();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      if (devnull > 2) close(devnull);
    }
    // Detached: our lines, and whatever else is printed to stderr, go to
    // syslog.
    log.set_sink(kqd::Logger::Sink::kSyslog);
    if (int err = log.ForwardStderr())
      log.Log(kqd::LogLevel::kWarning, "stderr stays /dev/null: %s", std::strerror(err));
  }
  // systemd (Type=notify): the device is served from now on.
  kqd::SdNotify(std::string("READY=1\nSTATUS=serving ") + transport->device_path() + " (" +
                kqd::TransportKindName(transport->kind()) + ")");

  // Wait for a stop signal; also notice an administrator unmounting the
  // device under us (the transport then stops serving).
  int status = 0;
  for (;;) {
    timespec tick{1, 0};
    int sig = sigtimedwait(&stop_signals, nullptr, &tick);
    if (sig > 0) {
      kqd::SdNotify("STOPPING=1\nSTATUS=stopping");
      log.Log(kqd::LogLevel::kNotice, "%s, stopping", strsignal(sig));
      break;
    }
    if (!transport->running()) {
      kqd::SdNotify("STOPPING=1\nSTATUS=the device went away");
      log.Log(kqd::LogLevel::kError, "the device went away, stopping");
      status = 1;
      break;
    }
  }
  transport->Stop();
  runtime.reactor().Stop();
  log.Log(kqd::LogLevel::kInfo, "stopped");
  return status;
}
