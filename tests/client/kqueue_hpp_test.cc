// The header-only C++ layer, <kqueue/kqueue.hpp>.
#include <kqueue/kqueue.hpp>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/client/client_test_support.h"

namespace kqd {
namespace client_test {
namespace {

using namespace std::chrono_literals;

// The layer's types behave as documented, at compile time.
static_assert(!std::is_copy_constructible_v<kq::Queue>, "Queue is move-only");
static_assert(!std::is_copy_assignable_v<kq::Queue>, "Queue is move-only");
static_assert(std::is_nothrow_move_constructible_v<kq::Queue>, "cheap moves");
static_assert(std::is_nothrow_move_assignable_v<kq::Queue>, "cheap moves");
static_assert(std::is_convertible_v<std::vector<struct kevent>&, kq::Events>, "vector");
static_assert(std::is_convertible_v<const std::vector<struct kevent>&, kq::Changes>, "const");
static_assert(std::is_convertible_v<kq::Events, kq::Changes>, "Span<T> -> Span<const T>");
static_assert(!std::is_convertible_v<kq::Changes, kq::Events>, "no const_cast");
static_assert(!std::is_convertible_v<const std::vector<struct kevent>&, kq::Events>,
              "events must be writable");

bool FdIsOpen(int fd) { return fcntl(fd, F_GETFD) >= 0 || errno != EBADF; }

class KqueueHppTest : public ClientTest {};

TEST_F(KqueueHppTest, OpenDefaultsToCloseOnExec) {
  kq::Queue q = kq::Queue::Open();
  ASSERT_TRUE(q.valid());
  EXPECT_TRUE(static_cast<bool>(q));
  EXPECT_NE(fcntl(q.fd(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_EQ(fcntl(q.fd(), F_GETFL) & O_NONBLOCK, 0);

  kq::Queue nb = kq::Queue::Open(O_NONBLOCK);
  EXPECT_EQ(fcntl(nb.fd(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_NE(fcntl(nb.fd(), F_GETFL) & O_NONBLOCK, 0);
}

TEST_F(KqueueHppTest, OpenErrors) {
  try {
    kq::Queue::Open(O_APPEND);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
  }
  std::error_code ec;
  kq::Queue q = kq::Queue::Open(O_APPEND, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(q.valid());
}

TEST_F(KqueueHppTest, MoveTransfersOwnership) {
  kq::Queue a = kq::Queue::Open();
  const int fd = a.fd();
  kq::Queue b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_EQ(b.fd(), fd);
  kq::Queue c;
  c = std::move(b);
  EXPECT_EQ(c.fd(), fd);
  EXPECT_TRUE(FdIsOpen(fd));
  {
    kq::Queue d(std::move(c));
  }
  EXPECT_FALSE(FdIsOpen(fd)) << "the destructor closes the queue";
}

TEST_F(KqueueHppTest, ReleaseAndReset) {
  kq::Queue q = kq::Queue::Open();
  int fd = q.release();
  EXPECT_FALSE(q.valid());
  EXPECT_TRUE(FdIsOpen(fd));
  q.reset(fd);
  EXPECT_EQ(q.fd(), fd);
  q.reset();
  EXPECT_FALSE(FdIsOpen(fd));
}

TEST_F(KqueueHppTest, TimeoutsAndEmptyQueue) {
  kq::Queue q = kq::Queue::Open();
  std::array<struct kevent, 4> events{};
  EXPECT_EQ(q.kevent({}, events, 0ns), 0);
  int64_t start = NowMs();
  EXPECT_EQ(q.kevent({}, events, 100ms), 0);
  EXPECT_GE(NowMs() - start, 99);
  // No room for events: returns at once even without a timeout.
  EXPECT_EQ(q.kevent({}, {}), 0);
}

TEST_F(KqueueHppTest, NegativeTimeoutIsEinval) {
  kq::Queue q = kq::Queue::Open();
  struct kevent out[1];
  std::error_code ec;
  EXPECT_EQ(q.kevent({}, out, -1ms, ec), -1);
  EXPECT_EQ(ec, std::errc::invalid_argument);
}

TEST_F(KqueueHppTest, ErrorsThrowOrReport) {
  kq::Queue none;
  struct kevent out[1];
  std::error_code ec;
  EXPECT_EQ(none.kevent({}, out, 0ns, ec), -1);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  try {
    none.kevent({}, out, 0ns);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
  }
  // A failed change with nowhere to report it: ENOENT.
  kq::Queue q = kq::Queue::Open();
  struct kevent del = kq::Event(77, EVFILT_USER, EV_DELETE);
  q.Apply(kq::Changes(&del, 1), ec);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
}

TEST_F(KqueueHppTest, EventZeroesPadding) {
  struct kevent ev = kq::Event(1, EVFILT_READ, EV_ADD, 2, 3, &ev);
  EXPECT_EQ(ev.ident, 1u);
  EXPECT_EQ(ev.filter, EVFILT_READ);
  EXPECT_EQ(ev.flags, EV_ADD);
  EXPECT_EQ(ev.fflags, 2u);
  EXPECT_EQ(ev.data, 3);
  EXPECT_EQ(ev.udata, &ev);
  uint32_t padding;
  memcpy(&padding, reinterpret_cast<const char*>(&ev) + 20, sizeof padding);
  EXPECT_EQ(padding, 0u);
}

TEST_F(KqueueHppTest, UserEventsWithContainers) {
  KQ_SKIP_UNLESS_ACCEPTS(kq::Event(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  kq::Queue q = kq::Queue::Open();
  std::vector<struct kevent> changes;
  for (int i = 1; i <= 3; i++)
    changes.push_back(kq::Event(i, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER));
  q.Apply(changes);
  std::vector<struct kevent> events(8);
  int n = q.kevent({}, events, 1s);
  ASSERT_EQ(n, 3);
  uintptr_t sum = 0;
  for (const struct kevent& ev : kq::Events(events).first(static_cast<size_t>(n)))
    sum += ev.ident;
  EXPECT_EQ(sum, 6u);
  // A plain array for the change, std::nullopt timeout on a pending event.
  struct kevent add[1] = {kq::Event(9, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER)};
  struct kevent one[1];
  EXPECT_EQ(q.kevent(add, one, std::nullopt), 1);
  EXPECT_EQ(one[0].ident, 9u);
}

TEST_F(KqueueHppTest, FilterNames) {
  kq::Queue q = kq::Queue::Open();
  EXPECT_EQ(kq::FilterByName(q, "EVFILT_READ"), EVFILT_READ);
  EXPECT_EQ(kq::FilterByName(q, "EVFILT_TIMER"), EVFILT_TIMER);
  EXPECT_EQ(kq::FilterName(q, EVFILT_TIMER), "EVFILT_TIMER");
  EXPECT_EQ(kq::FilterName(q.fd(), EVFILT_USER), "EVFILT_USER");
  // A string_view that is not NUL-terminated.
  std::string_view prefix = std::string_view("EVFILT_PROCxyz").substr(0, 11);
  EXPECT_EQ(kq::FilterByName(q.fd(), prefix), EVFILT_PROC);

  std::error_code ec;
  EXPECT_EQ(kq::FilterName(q, 9999, ec), "");
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  kq::FilterByName(q, "EVFILT_NOSUCH", ec);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  kq::FilterByName(q, std::string(KFILTER_MAXNAME, 'x'), ec);
  EXPECT_EQ(ec, std::errc::filename_too_long);
  try {
    kq::FilterByName(q, "EVFILT_NOSUCH");
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
  }
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
