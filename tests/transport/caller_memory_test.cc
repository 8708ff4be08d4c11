// caller_memory against this process's own memory (a tid works as a pid for
// process_vm_*, and a process may always access itself).
#include "daemon/transport/caller_memory.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kqd {
namespace {

uint64_t Addr(const void* p) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
}

// Two pages: the first readable and writable, the second PROT_NONE.
class GuardedPage {
 public:
  GuardedPage() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<char*>(p);
    EXPECT_EQ(mprotect(base_ + page_, page_, PROT_NONE), 0);
  }
  ~GuardedPage() { munmap(base_, 2 * page_); }
  char* page() { return base_; }
  char* guard() { return base_ + page_; }
  size_t size() const { return page_; }

 private:
  size_t page_ = 0;
  char* base_ = nullptr;
};

TEST(CallerMemory, ReadsAndWritesOwnMemory) {
  std::vector<char> src(100000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 7);
  std::vector<char> dst(src.size());
  ASSERT_EQ(ReadCallerMemory(gettid(), Addr(src.data()), dst.data(),
                             dst.size()),
            0);
  EXPECT_EQ(src, dst);

  std::vector<char> target(src.size(), 0);
  ASSERT_EQ(WriteCallerMemory(gettid(), Addr(target.data()), src.data(),
                              src.size()),
            0);
  EXPECT_EQ(src, target);
}

TEST(CallerMemory, ZeroBytesAlwaysSucceeds) {
  EXPECT_EQ(ReadCallerMemory(gettid(), 0, nullptr, 0), 0);
  EXPECT_EQ(WriteCallerMemory(gettid(), 0, nullptr, 0), 0);
}

TEST(CallerMemory, BadAddressIsEfault) {
  char buf[16];
  EXPECT_EQ(ReadCallerMemory(gettid(), 0, buf, sizeof(buf)), EFAULT);
  EXPECT_EQ(ReadCallerMemory(gettid(), 8, buf, sizeof(buf)), EFAULT);
  EXPECT_EQ(WriteCallerMemory(gettid(), 0, buf, sizeof(buf)), EFAULT);
  // A range that wraps around the top of the address space.
  EXPECT_EQ(ReadCallerMemory(gettid(), ~uint64_t{0} - 3, buf, sizeof(buf)),
            EFAULT);
}

TEST(CallerMemory, RangeRunningIntoUnmappedPageIsEfault) {
  GuardedPage mem;
  char buf[64];
  // 32 readable bytes, then the guard page: the partial transfer continues
  // and then fails.
  EXPECT_EQ(ReadCallerMemory(gettid(), Addr(mem.guard() - 32), buf,
                             sizeof(buf)),
            EFAULT);
  EXPECT_EQ(WriteCallerMemory(gettid(), Addr(mem.guard() - 32), buf,
                              sizeof(buf)),
            EFAULT);
  // Right up to the boundary is fine.
  EXPECT_EQ(ReadCallerMemory(gettid(), Addr(mem.guard() - 32), buf, 32), 0);
}

TEST(CallerMemory, ReadOnlyTargetIsEfault) {
  GuardedPage mem;
  ASSERT_EQ(mprotect(mem.page(), mem.size(), PROT_READ), 0);
  char buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(WriteCallerMemory(gettid(), Addr(mem.page()), buf, sizeof(buf)),
            EFAULT);
}

TEST(CallerMemory, NoSuchThread) {
  char buf[8] = {};
  EXPECT_EQ(ReadCallerMemory(0, Addr(buf), buf, sizeof(buf)), ESRCH);
  std::string s;
  EXPECT_EQ(ReadCallerString(0, Addr(buf), 8, &s), ESRCH);
}

TEST(CallerString, ReadsShortString) {
  const char text[] = "EVFILT_READ";
  std::string out;
  ASSERT_EQ(ReadCallerString(gettid(), Addr(text), 256, &out), 0);
  EXPECT_EQ(out, "EVFILT_READ");
}

TEST(CallerString, StringEndingAtPageEndBeforeGuardPage) {
  GuardedPage mem;
  const char text[] = "timer";  // 5 chars + NUL, the NUL the page's last byte
  char* start = mem.guard() - sizeof(text);
  memcpy(start, text, sizeof(text));
  std::string out;
  ASSERT_EQ(ReadCallerString(gettid(), Addr(start), 256, &out), 0);
  EXPECT_EQ(out, "timer");
  // An empty string in the very last byte.
  mem.guard()[-1] = '\0';
  ASSERT_EQ(ReadCallerString(gettid(), Addr(mem.guard() - 1), 256, &out), 0);
  EXPECT_EQ(out, "");
}

TEST(CallerString, StringSpanningTwoPages) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  char* base = static_cast<char*>(p);
  ASSERT_EQ(mprotect(base + 2 * page, page, PROT_NONE), 0);
  char* start = base + page - 10;  // 10 bytes in page 1, the rest in page 2
  std::string expected(30, 'x');
  memcpy(start, expected.c_str(), expected.size() + 1);
  std::string out;
  EXPECT_EQ(ReadCallerString(gettid(), Addr(start), 256, &out), 0);
  EXPECT_EQ(out, expected);
  munmap(p, 3 * page);
}

TEST(CallerString, MaxLenCountsTheNul) {
  const char text[] = "abcd";
  std::string out;
  EXPECT_EQ(ReadCallerString(gettid(), Addr(text), 5, &out), 0);
  EXPECT_EQ(out, "abcd");
  EXPECT_EQ(ReadCallerString(gettid(), Addr(text), 4, &out), ENAMETOOLONG);
  EXPECT_EQ(ReadCallerString(gettid(), Addr(text), 0, &out), ENAMETOOLONG);
}

TEST(CallerString, NoNulBeforeGuardPageIsEfault) {
  GuardedPage mem;
  memset(mem.page(), 'a', mem.size());
  std::string out;
  EXPECT_EQ(ReadCallerString(gettid(), Addr(mem.guard() - 8), 256, &out),
            EFAULT);
  // ...unless max_len ends first.
  EXPECT_EQ(ReadCallerString(gettid(), Addr(mem.guard() - 8), 8, &out),
            ENAMETOOLONG);
}

TEST(CallerString, NullPointerIsEfault) {
  std::string out;
  EXPECT_EQ(ReadCallerString(gettid(), 0, 256, &out), EFAULT);
}

}  // namespace
}  // namespace kqd
