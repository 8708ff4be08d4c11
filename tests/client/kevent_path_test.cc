// Which ioctl the library's kevent() sends: the smallest inline command
// (ABI 3) that holds the call, KQ_IOC_KEVENT beyond 408 records or for a
// null array, and KQ_IOC_KEVENT always when $KQUEUE_INLINE is 0 (the
// _pointer run of this test). The test binary defines ioctl() itself, so the
// library, linked statically into it, calls this recorder, which passes
// every call on to the kernel unchanged.
#include <sys/event.h>

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/client/client_test_support.h"

namespace {

std::mutex g_mu;
std::vector<unsigned long> g_commands;  // guarded by g_mu

std::vector<unsigned long> TakeCommands() {
  std::lock_guard<std::mutex> l(g_mu);
  std::vector<unsigned long> out;
  out.swap(g_commands);
  return out;
}

}  // namespace

extern "C" int ioctl(int fd, unsigned long request, ...) __THROW {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  {
    std::lock_guard<std::mutex> l(g_mu);
    g_commands.push_back(request);
  }
  return static_cast<int>(syscall(SYS_ioctl, fd, request, arg));
}

namespace kqd {
namespace client_test {
namespace {

bool InlineSwitchedOff() {
  const char* v = getenv("KQUEUE_INLINE");
  return v != nullptr && strcmp(v, "0") == 0;
}

class KeventPath : public ClientTest {
 protected:
  void SetUp() override {
    ClientTest::SetUp();
    // Which ioctl a daemon call takes: a queue without the fast path (a
    // call the fast path answers sends none; local_path_test counts those).
    const char* was = getenv("KQUEUE_LOCAL");
    std::string saved = was != nullptr ? was : "";
    setenv("KQUEUE_LOCAL", "0", 1);
    kq_ = kqueue();
    if (was != nullptr) {
      setenv("KQUEUE_LOCAL", saved.c_str(), 1);
    } else {
      unsetenv("KQUEUE_LOCAL");
    }
    ASSERT_GE(kq_, 0) << strerror(errno);
    TakeCommands();
  }
  void TearDown() override {
    if (kq_ >= 0) close(kq_);
  }
  // The one command kevent() sent for a call of nchanges/nevents records,
  // which adds `nchanges` triggered one-shot user events and collects up to
  // `nevents`; checks the result too.
  unsigned long CommandFor(size_t nchanges, size_t nevents) {
    std::vector<struct kevent> changes, events(nevents + 1);
    for (size_t i = 0; i < nchanges; i++)
      changes.push_back(Ev(next_++, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER));
    const struct timespec zero = {0, 0};
    int n = kevent(kq_, changes.data(), nchanges, events.data(), nevents, &zero);
    EXPECT_EQ(n, static_cast<int>(std::min(nchanges, nevents))) << strerror(errno);
    // Collect what is left, for the next call's count.
    struct kevent rest[512];
    while (kevent(kq_, nullptr, 0, rest, 512, &zero) > 0) {
    }
    std::vector<unsigned long> sent = TakeCommands();
    EXPECT_GE(sent.size(), 1u);
    return sent.empty() ? 0 : sent.front();
  }
  int kq_ = -1;
  uintptr_t next_ = 1;
};

TEST_F(KeventPath, SmallestInlineCommandThatFits) {
  if (InlineSwitchedOff()) {
    EXPECT_EQ(CommandFor(1, 1), KQ_IOC_KEVENT);
    EXPECT_EQ(CommandFor(0, 300), KQ_IOC_KEVENT);
    EXPECT_EQ(CommandFor(8, 0), KQ_IOC_KEVENT);
    return;
  }
  EXPECT_EQ(CommandFor(0, 0), KQ_IOC_KEVENT_INLINE_1);
  EXPECT_EQ(CommandFor(1, 1), KQ_IOC_KEVENT_INLINE_1);
  EXPECT_EQ(CommandFor(2, 0), KQ_IOC_KEVENT_INLINE_8);
  EXPECT_EQ(CommandFor(1, 8), KQ_IOC_KEVENT_INLINE_8);
  EXPECT_EQ(CommandFor(9, 3), KQ_IOC_KEVENT_INLINE_64);
  EXPECT_EQ(CommandFor(64, 64), KQ_IOC_KEVENT_INLINE_64);
  EXPECT_EQ(CommandFor(0, 65), KQ_IOC_KEVENT_INLINE_408);
  EXPECT_EQ(CommandFor(408, 408), KQ_IOC_KEVENT_INLINE_408);
  EXPECT_EQ(CommandFor(409, 1), KQ_IOC_KEVENT);
  EXPECT_EQ(CommandFor(1, 409), KQ_IOC_KEVENT);
}

TEST_F(KeventPath, NullArrayWithACountIsEfault) {
  // Either path: the library leaves a null array to the pointer ioctl,
  // whose answer is EFAULT, as on the BSDs.
  // The daemon answers EFAULT when it copies, so an event must be ready.
  struct kevent one = Ev(1, EVFILT_USER, EV_ADD, NOTE_TRIGGER);
  const struct timespec zero = {0, 0};
  EXPECT_EQ(kevent(kq_, nullptr, 1, nullptr, 0, &zero), -1);
  EXPECT_EQ(errno, EFAULT);
  EXPECT_EQ(kevent(kq_, &one, 1, nullptr, 0, &zero), 0);
  EXPECT_EQ(kevent(kq_, nullptr, 0, nullptr, 1, &zero), -1);
  EXPECT_EQ(errno, EFAULT);
  std::vector<unsigned long> sent = TakeCommands();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0], KQ_IOC_KEVENT);
  EXPECT_EQ(sent[2], KQ_IOC_KEVENT);
}

TEST_F(KeventPath, BadArrayIsEfaultByAddressAndFaultsInline) {
  // A bad array other than a null one: by address the daemon's copy fails
  // and kevent() answers EFAULT, as on the BSDs; inline, the library's own
  // copy faults in the caller, as memcpy does (the documented difference:
  // checking the copy costs a syscall per direction, more than the inline
  // path saves — see client/README.md).
  const long page = sysconf(_SC_PAGESIZE);
  void* none = mmap(nullptr, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(none, MAP_FAILED);
  void* ro = mmap(nullptr, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(ro, MAP_FAILED);
  const struct timespec zero = {0, 0};
  const auto* unreadable = static_cast<const struct kevent*>(none);
  auto* unwritable = static_cast<struct kevent*>(ro);
  struct kevent one = Ev(7, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER);
  ASSERT_EQ(kevent(kq_, &one, 1, nullptr, 0, &zero), 0);
  if (InlineSwitchedOff()) {
    EXPECT_EQ(kevent(kq_, unreadable, 1, nullptr, 0, &zero), -1);
    EXPECT_EQ(errno, EFAULT);
    EXPECT_EQ(kevent(kq_, nullptr, 0, unwritable, 1, &zero), -1);
    EXPECT_EQ(errno, EFAULT);
  } else {
    ::testing::FLAGS_gtest_death_test_style = "fast";  // fork only: the child uses this kqueue
    EXPECT_DEATH(kevent(kq_, unreadable, 1, nullptr, 0, &zero), "");
    EXPECT_DEATH(kevent(kq_, nullptr, 0, unwritable, 1, &zero), "");
  }
  // The queue and the library carry on.
  struct kevent two = Ev(8, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER), out[2];
  ASSERT_EQ(kevent(kq_, &two, 1, nullptr, 0, &zero), 0);
  EXPECT_GE(kevent(kq_, nullptr, 0, out, 2, &zero), 1);
  munmap(none, page);
  munmap(ro, page);
}

TEST_F(KeventPath, SameArrayForChangesAndEvents) {
  // kevent(kq, a, n, a, n, ...): the events overwrite the changes.
  struct kevent a[3];
  for (int i = 0; i < 3; i++) a[i] = Ev(100 + i, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER);
  const struct timespec zero = {0, 0};
  ASSERT_EQ(kevent(kq_, a, 3, a, 3, &zero), 3) << strerror(errno);
  uintptr_t sum = 0;
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(a[i].filter, EVFILT_USER);
    sum += a[i].ident;
  }
  EXPECT_EQ(sum, 100u + 101u + 102u);
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
