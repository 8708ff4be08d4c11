#include "daemon/os/logger.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>

namespace kqd {
namespace {

std::string Format(const char* fmt, va_list ap) {
  char buf[1024];
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(buf, sizeof buf, fmt, copy);
  va_end(copy);
  if (n < 0) return std::string();
  std::string s(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
  // One event, one line: a client-supplied string must not forge another.
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

bool ParseLogLevel(const std::string& name, LogLevel* level) {
  static const std::pair<const char*, LogLevel> kNames[] = {
      {"error", LogLevel::kError}, {"warning", LogLevel::kWarning},
      {"notice", LogLevel::kNotice}, {"info", LogLevel::kInfo},
      {"debug", LogLevel::kDebug}};
  for (const auto& [n, l] : kNames) {
    if (name == n) {
      *level = l;
      return true;
    }
  }
  return false;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError: return "error";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kNotice: return "notice";
    case LogLevel::kInfo: return "info";
    case LogLevel::kDebug: return "debug";
  }
  return "?";
}

Logger::~Logger() {
  if (forwarder_.joinable()) {
    // The pipe's writing ends are descriptors 1 and 2: closing them ends
    // the forwarding thread's read loop.
    close(STDOUT_FILENO);
    close(STDERR_FILENO);
    forwarder_.join();
  }
  if (sink_ == Sink::kSyslog) closelog();
}

int Logger::ForwardStderr() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return errno;
  ScopedFd read_end(p[0]);
  ScopedFd write_end(p[1]);
  if (dup2(write_end.get(), STDOUT_FILENO) < 0 || dup2(write_end.get(), STDERR_FILENO) < 0)
    return errno;
  forward_read_ = std::move(read_end);
  forwarder_ = std::thread([this, fd = forward_read_.get()] { ForwardLoop(fd); });
  return 0;
}

void Logger::ForwardLoop(int fd) {
  std::string pending;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos || pending.size() > 4000) {
      size_t len = nl == std::string::npos ? pending.size() : nl;
      std::string line = pending.substr(0, len);
      pending.erase(0, nl == std::string::npos ? len : len + 1);
      const std::string prefix = "kqueued: ";
      if (line.compare(0, prefix.size(), prefix) == 0) line.erase(0, prefix.size());
      LogLevel level = LogLevel::kWarning;
      size_t colon = line.find(": ");
      if (colon != std::string::npos && ParseLogLevel(line.substr(0, colon), &level))
        line.erase(0, colon + 2);
      if (line.empty() || !Enabled(level)) continue;
      MutexLock l(mu_);
      Write(level, line);
    }
  }
}

void Logger::set_level(LogLevel level) {
  MutexLock l(mu_);
  level_ = level;
}

LogLevel Logger::level() const {
  MutexLock l(mu_);
  return level_;
}

void Logger::set_sink(Sink sink) {
  MutexLock l(mu_);
  if (sink_ == Sink::kSyslog && sink != Sink::kSyslog) closelog();
  if (sink == Sink::kSyslog && sink_ != Sink::kSyslog) openlog("kqueued", LOG_PID, LOG_DAEMON);
  sink_ = sink;
  // journald sets $JOURNAL_STREAM when stderr is its stream: then "<N>"
  // prefixes carry each line's priority.
  journal_prefix_ = getenv("JOURNAL_STREAM") != nullptr;
  journal_checked_ = true;
}

void Logger::set_rate_limit(RateLimit limit) {
  MutexLock l(mu_);
  rate_ = limit;
  buckets_.clear();
}

bool Logger::Enabled(LogLevel level) const {
  MutexLock l(mu_);
  return static_cast<int>(level) <= static_cast<int>(level_);
}

uint64_t Logger::suppressed() const {
  MutexLock l(mu_);
  return suppressed_;
}

void Logger::Log(LogLevel level, const char* fmt, ...) {
  if (!Enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  std::string line = Format(fmt, ap);
  va_end(ap);
  MutexLock l(mu_);
  Write(level, line);
}

void Logger::ClientLog(LogLevel level, uid_t uid, const char* fmt, ...) {
  if (!Enabled(level)) return;
  auto now = std::chrono::steady_clock::now();
  uint64_t dropped = 0;
  {
    MutexLock l(mu_);
    auto [it, fresh] = buckets_.try_emplace(uid);
    Bucket& b = it->second;
    if (fresh) {
      b.tokens = rate_.burst;
    } else {
      double elapsed = std::chrono::duration<double>(now - b.refilled).count();
      b.tokens = std::min(rate_.burst, b.tokens + elapsed * rate_.per_second);
    }
    b.refilled = now;
    if (b.tokens < 1) {
      b.dropped++;
      suppressed_++;
      return;
    }
    b.tokens -= 1;
    dropped = b.dropped;
    b.dropped = 0;
    // Forget full buckets now and then so the map stays small.
    if (buckets_.size() > 4096) {
      for (auto i = buckets_.begin(); i != buckets_.end();)
        i = (i->second.tokens >= rate_.burst - 1 && i->second.dropped == 0) ? buckets_.erase(i)
                                                                            : std::next(i);
    }
  }
  va_list ap;
  va_start(ap, fmt);
  std::string line = Format(fmt, ap);
  va_end(ap);
  line += " (uid " + std::to_string(uid) + ")";
  if (dropped > 0)
    line += " [" + std::to_string(dropped) + " earlier lines from this uid suppressed]";
  MutexLock l(mu_);
  Write(level, line);
}

void Logger::Write(LogLevel level, const std::string& line) {
  if (!journal_checked_) {
    journal_prefix_ = getenv("JOURNAL_STREAM") != nullptr;
    journal_checked_ = true;
  }
  if (sink_ == Sink::kSyslog) {
    syslog(static_cast<int>(level), "%s", line.c_str());
    return;
  }
  std::string out;
  if (journal_prefix_) {
    out = "<" + std::to_string(static_cast<int>(level)) + ">" + line + "\n";
  } else {
    out = std::string("kqueued: ") + LogLevelName(level) + ": " + line + "\n";
  }
  // One write per line, so lines from several threads never interleave.
  ssize_t n = write(STDERR_FILENO, out.data(), out.size());
  (void)n;
}

}  // namespace kqd
