// Files and sockets for the fd filters' tests: pipes, loopback TCP pairs,
// and waiting for one event among whatever a queue collects.
#ifndef KQUEUED_TESTS_SUPPORT_FD_TEST_UTIL_H_
#define KQUEUED_TESTS_SUPPORT_FD_TEST_UTIL_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>

#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace kqd {
namespace testing {

// A pipe; `flags` adds to O_CLOEXEC (O_NONBLOCK to fill it up).
struct Pipe {
  ScopedFd r, w;
  explicit Pipe(int flags = 0) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | flags) == 0) {
      r.reset(p[0]);
      w.reset(p[1]);
    }
  }
};

inline void WriteBytes(int fd, size_t n) {
  std::string s(n, 'x');
  ASSERT_EQ(write(fd, s.data(), n), static_cast<ssize_t>(n));
}

inline void ReadBytes(int fd, size_t n) {
  std::string s(n, '\0');
  ASSERT_EQ(read(fd, &s[0], n), static_cast<ssize_t>(n));
}

// The first event for (ident, filter) collected within `ms`.
inline std::optional<kq_kevent> WaitEvent(TestQueue& q, uint64_t ident, uint32_t filter,
                                          long ms = 2000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    for (const kq_kevent& ev : q.Collect(64, left > 0 ? left : 0))
      if (ev.ident == ident && ev.filter == filter) return ev;
    if (left <= 0) return std::nullopt;
  }
}

// A TCP listener on an ephemeral loopback port; *addr receives its address.
inline ScopedFd TcpListener(sockaddr_in* addr, int backlog = 16) {
  ScopedFd ls(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof *addr;
  if (bind(ls.get(), reinterpret_cast<sockaddr*>(addr), len) != 0 ||
      listen(ls.get(), backlog) != 0 ||
      getsockname(ls.get(), reinterpret_cast<sockaddr*>(addr), &len) != 0)
    return ScopedFd();
  return ls;
}

inline ScopedFd TcpConnect(const sockaddr_in& addr) {
  ScopedFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return ScopedFd();
  return s;
}

// A connected TCP pair over loopback: client and accepted server side.
struct TcpPair {
  ScopedFd client, server;
  TcpPair() {
    sockaddr_in addr;
    ScopedFd ls = TcpListener(&addr);
    client = TcpConnect(addr);
    if (client) server.reset(accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
};

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_FD_TEST_UTIL_H_
