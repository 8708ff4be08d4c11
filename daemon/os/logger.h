// Logger: the daemon's log — one line per notable event, each with a level.
//
// Sinks: stderr (the default; under systemd journald reads it, and with
// $JOURNAL_STREAM set each line starts with a "<N>" priority prefix that
// journald turns into the entry's priority), or syslog(3) once the daemon
// has detached from its terminal. Lines below the configured level are
// dropped before they are formatted.
//
// Client-caused lines (a bad argument, a limit reached) go through
// ClientLog, which is rate-limited per client uid: a misbehaving client can
// fill its own small budget and no more; what it loses is counted and the
// count appears on its next line that gets through.
#ifndef KQUEUED_DAEMON_OS_LOGGER_H_
#define KQUEUED_DAEMON_OS_LOGGER_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// syslog's priorities, most severe first (the numbers are syslog's).
enum class LogLevel { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

// "error", "warning", "notice", "info", "debug" -> level; false if unknown.
bool ParseLogLevel(const std::string& name, LogLevel* level);
const char* LogLevelName(LogLevel level);

class Logger {
 public:
  enum class Sink { kStderr, kSyslog };

  // Per-client budget: a burst of `burst` lines, refilled at `per_second`.
  struct RateLimit {
    double burst = 10;
    double per_second = 1;
  };

  Logger() = default;
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;
  ~Logger();

  // Lines below `level` are dropped. Thread-safe.
  void set_level(LogLevel level) EXCLUDES(mu_);
  LogLevel level() const EXCLUDES(mu_);
  // Sends further lines to `sink` (openlog/closelog as needed). Thread-safe.
  void set_sink(Sink sink) EXCLUDES(mu_);
  void set_rate_limit(RateLimit limit) EXCLUDES(mu_);
  // Whether a line at `level` would be written (to skip costly formatting).
  bool Enabled(LogLevel level) const EXCLUDES(mu_);

  // One line (printf format, no trailing newline needed).
  void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 3, 4)))
      EXCLUDES(mu_);
  // One line caused by a client with user id `uid`, rate-limited per uid.
  void ClientLog(LogLevel level, uid_t uid, const char* fmt, ...)
      __attribute__((format(printf, 4, 5))) EXCLUDES(mu_);

  // Lines dropped by the rate limit so far (all clients), for tests and stats.
  uint64_t suppressed() const EXCLUDES(mu_);

  // For a detached daemon: makes descriptors 1 and 2 a pipe whose lines a
  // thread of the logger writes to the current sink, so what other parts
  // (and libfuse) print to stderr reaches syslog too. A line's level is read
  // from a "kqueued: LEVEL: " prefix, else it is a warning. Call once, after
  // set_sink(kSyslog). Returns 0 or an errno.
  int ForwardStderr();

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled;
    uint64_t dropped = 0;  // since the last line that got through
  };
  void Write(LogLevel level, const std::string& line) REQUIRES(mu_);
  void ForwardLoop(int fd) EXCLUDES(mu_);

  // The settings, the rate-limit buckets and the sink itself (one line is
  // written whole under it). A leaf: every other lock of the daemon may be
  // held when a line is logged; nothing is locked under it.
  mutable Mutex mu_;
  LogLevel level_ GUARDED_BY(mu_) = LogLevel::kNotice;
  Sink sink_ GUARDED_BY(mu_) = Sink::kStderr;
  bool journal_prefix_ GUARDED_BY(mu_) = false;  // set from $JOURNAL_STREAM by set_sink
  bool journal_checked_ GUARDED_BY(mu_) = false;
  RateLimit rate_ GUARDED_BY(mu_);
  std::map<uid_t, Bucket> buckets_ GUARDED_BY(mu_);
  uint64_t suppressed_ GUARDED_BY(mu_) = 0;

  // ForwardStderr's reading end and thread (joined by the destructor once
  // descriptors 1 and 2 are closed).
  ScopedFd forward_read_;
  std::thread forwarder_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_LOGGER_H_
