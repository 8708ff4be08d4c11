// The serving model under attack (issue 12, items 2 and 3): an unprivileged
// user (nobody) sends requests that are huge (a 400 MiB changelist of zero
// pages, every change answered) or slow (a changelist in a page of a
// filesystem that does not answer), while a victim of another uid (root,
// the test itself) must keep being served within 100 ms. Also: the
// attacker's own call can be interrupted or killed between slices, and the
// daemon stops promptly on SIGTERM in the middle of it.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/ev.h"
#include "tests/support/raw_kevent.h"
#include "tests/support/slow_file.h"

namespace kqd {
namespace testing {
namespace {

constexpr size_t kHugeBytes = 400u << 20;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int64_t kSlowdown = 5;  // a sanitized daemon on a busy CI machine
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr int64_t kSlowdown = 5;
#else
constexpr int64_t kSlowdown = 1;
#endif
#else
constexpr int64_t kSlowdown = 1;
#endif
// A victim's call must complete within this (issue 12: 100 ms; before the
// serving pool it waited for the whole 400 MiB call, tens of seconds).
constexpr int64_t kVictimBudgetUs = 100000 * kSlowdown;

int64_t NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

bool BecomeNobody() {
  passwd* nobody = getpwnam("nobody");
  return nobody != nullptr && setgid(nobody->pw_gid) == 0 && setuid(nobody->pw_uid) == 0;
}

// `bytes` of address space mapped onto one 20 KiB memfd over and over: an
// eventlist with room for millions of answers that costs 20 KiB of memory
// (every slot is overwritten again and again).
kq_kevent* RepeatedEventlist(size_t bytes) {
  const size_t unit = 512 * sizeof(kq_kevent);  // 20480: whole pages
  int fd = memfd_create("events", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, unit) != 0) return nullptr;
  void* base = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  for (size_t off = 0; off + unit <= bytes; off += unit) {
    if (mmap(static_cast<char*>(base) + off, unit, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
             fd, 0) == MAP_FAILED)
      return nullptr;
  }
  close(fd);
  return static_cast<kq_kevent*>(base);
}

// What a hog child reports: that its call started, then how it ended.
struct HogReport {
  int result;
  int error;
  int64_t took_us;
};

struct Hog {
  pid_t pid = -1;
  int report_fd = -1;
};

void OnAlarm(int) {}

// Forks a child that becomes nobody and makes one kevent call whose
// changelist is kHugeBytes of zero pages (each change is answered with an
// EV_ERROR into a repeated eventlist). With alarm_ms > 0 a SIGALRM (caught,
// no SA_RESTART) arrives that long into the call. Returns once the call is
// about to start.
Hog StartHog(const std::string& device, int alarm_ms) {
  int p[2];
  if (pipe(p) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    if (!BecomeNobody()) _exit(2);
    int kq = open(device.c_str(), O_RDWR | O_CLOEXEC);
    void* changes =
        mmap(nullptr, kHugeBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    kq_kevent* events = RepeatedEventlist(kHugeBytes);
    if (kq < 0 || changes == MAP_FAILED || events == nullptr) _exit(3);
    if (alarm_ms > 0) {
      struct sigaction sa = {};
      sa.sa_handler = OnAlarm;
      sigaction(SIGALRM, &sa, nullptr);
      itimerval it = {};
      it.it_value.tv_sec = alarm_ms / 1000;
      it.it_value.tv_usec = (alarm_ms % 1000) * 1000;
      setitimer(ITIMER_REAL, &it, nullptr);
    }
    const size_t n = kHugeBytes / sizeof(kq_kevent);
    char started = 's';
    if (write(p[1], &started, 1) != 1) _exit(4);
    int64_t t0 = NowUs();
    HogReport r;
    r.result = Kevent(kq, static_cast<kq_kevent*>(changes), n, events, n, 0);
    r.error = r.result < 0 ? errno : 0;
    r.took_us = NowUs() - t0;
    if (write(p[1], &r, sizeof r) != sizeof r) _exit(5);
    _exit(0);
  }
  close(p[1]);
  char started;
  if (pid < 0 || read(p[0], &started, 1) != 1) {
    close(p[0]);
    return {};
  }
  return Hog{pid, p[0]};
}

// Waits up to `ms` for `pid` to be reaped.
bool ReapWithin(pid_t pid, int ms) {
  const int64_t end = NowUs() + ms * 1000;
  do {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    usleep(5000);
  } while (NowUs() < end);
  return false;
}

// In a child of the test's own uid (root): opens a kqueue and makes 20
// zero-timeout polls and 20 EVFILT_USER add+trigger+collect calls. Returns
// the slowest call in µs (open included), or -1 if the child did not finish
// within 5 s (it is then killed: its request was never even read).
int64_t VictimWorstCallUs(const std::string& device) {
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    alarm(5);  // default action: a victim that hangs dies
    int64_t worst = 0;
    int64_t t = NowUs();
    int kq = open(device.c_str(), O_RDWR | O_CLOEXEC);
    if (kq < 0) _exit(2);
    worst = NowUs() - t;
    for (int i = 0; i < 20; i++) {
      kq_kevent out;
      t = NowUs();
      if (Kevent(kq, nullptr, 0, &out, 1, 0) != 0) _exit(3);
      worst = std::max(worst, NowUs() - t);
      kq_kevent both[2] = {Ev(i + 1, EVFILT_USER, EV_ADD | EV_ONESHOT),
                           Ev(i + 1, EVFILT_USER, 0, NOTE_TRIGGER)};
      t = NowUs();
      if (Kevent(kq, both, 2, &out, 1, 0) != 1 || out.ident != static_cast<uint64_t>(i + 1))
        _exit(4);
      worst = std::max(worst, NowUs() - t);
    }
    if (write(p[1], &worst, sizeof worst) != sizeof worst) _exit(5);
    _exit(0);
  }
  close(p[1]);
  int64_t worst = -1;
  if (read(p[0], &worst, sizeof worst) != sizeof worst) worst = -1;
  close(p[0]);
  int status;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return worst;
}

// Whether `pid` has exited (a zombie, left for its parent's fixture to reap).
bool ExitedWithin(pid_t pid, int ms) {
  const int64_t end = NowUs() + ms * 1000;
  do {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    size_t paren = line.rfind(')');
    if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z') return true;
    usleep(5000);
  } while (NowUs() < end);
  return false;
}

int CountThreads(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

class Serving : public ::testing::Test {
 protected:
  void SetUp() override {
    if (getpwnam("nobody") == nullptr) GTEST_SKIP() << "no user nobody";
    if (getuid() != 0) GTEST_SKIP() << "needs root (the victim and attacker differ in uid)";
    device_ = SharedDaemon().device();
  }
  std::string device_;
};

TEST_F(Serving, HugeChangelistOfAnotherUserDelaysNobody) {
  Hog hog = StartHog(device_, 0);
  ASSERT_GT(hog.pid, 0);
  usleep(200000);  // the daemon is well into the 10 M changes
  for (int round = 0; round < 3; round++) {
    int64_t worst = VictimWorstCallUs(device_);
    EXPECT_GE(worst, 0) << "the victim was not served at all";
    EXPECT_LT(worst, kVictimBudgetUs) << "round " << round;
  }
  // Still busy: the test measured what it meant to.
  EXPECT_FALSE(ReapWithin(hog.pid, 0)) << "the huge call ended early";
  // Killed, the caller leaves at once: its request stops between slices
  // (it does not stay in D state until 10 M changes are done).
  int64_t t0 = NowUs();
  kill(hog.pid, SIGKILL);
  EXPECT_TRUE(ReapWithin(hog.pid, 1000)) << "the SIGKILLed caller is stuck in its call";
  EXPECT_LT(NowUs() - t0, 1000000);
  close(hog.report_fd);
}

TEST_F(Serving, SignalInterruptsAHugeChangelistBetweenSlices) {
  Hog hog = StartHog(device_, 300);
  ASSERT_GT(hog.pid, 0);
  HogReport r{};
  // The call ends with EINTR soon after the alarm, not after 10 M changes.
  pollfd pfd = {hog.report_fd, POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 3000), 1) << "the interrupted call did not return";
  ASSERT_EQ(read(hog.report_fd, &r, sizeof r), static_cast<ssize_t>(sizeof r));
  EXPECT_EQ(r.result, -1);
  EXPECT_EQ(r.error, EINTR);
  EXPECT_LT(r.took_us, 1500000);
  EXPECT_TRUE(ReapWithin(hog.pid, 1000));
  close(hog.report_fd);
}

// A SlowFile mounted in a fresh directory under /tmp that other users may
// enter; the directory goes with it.
class SlowFileInTempDir {
 public:
  static std::unique_ptr<SlowFileInTempDir> Mount(std::string* error) {
    char dir[] = "/tmp/kqueued-slow-XXXXXX";
    if (!mkdtemp(dir)) {
      *error = std::string("mkdtemp: ") + strerror(errno);
      return nullptr;
    }
    chmod(dir, 0755);
    auto file = SlowFile::Mount(std::string(dir) + "/file", error);
    if (!file) {
      rmdir(dir);
      return nullptr;
    }
    return std::make_unique<SlowFileInTempDir>(dir, std::move(file));
  }
  ~SlowFileInTempDir() {
    file_.reset();
    unlink((dir_ + "/file").c_str());
    rmdir(dir_.c_str());
  }
  SlowFileInTempDir(const SlowFileInTempDir&) = delete;
  SlowFileInTempDir& operator=(const SlowFileInTempDir&) = delete;
  SlowFile& file() const { return *file_; }

  // Use Mount().
  SlowFileInTempDir(std::string dir, std::unique_ptr<SlowFile> file)
      : dir_(std::move(dir)), file_(std::move(file)) {}

 private:
  std::string dir_;
  std::unique_ptr<SlowFile> file_;
};

// A changelist in a page whose filesystem does not answer: the thread that
// reads it waits for the page; every other client is still served. With
// `threads` attacker threads all doing it, the daemon spends at most a few
// threads on them (per-uid lanes), not one each.
void SlowPageCase(const std::string& device, int threads) {
  std::string error;
  auto slow = SlowFileInTempDir::Mount(&error);
  ASSERT_TRUE(slow) << error;
  const int daemon_threads_before = CountThreads(SharedDaemon().pid());

  pid_t attacker = fork();
  ASSERT_GE(attacker, 0);
  if (attacker == 0) {
    if (!BecomeNobody()) _exit(2);
    int kq = open(device.c_str(), O_RDWR | O_CLOEXEC);
    int fd = open(slow->file().path().c_str(), O_RDONLY | O_CLOEXEC);
    if (kq < 0 || fd < 0) _exit(3);
    void* page = mmap(nullptr, SlowFile::kSize, PROT_READ, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) _exit(4);
    std::vector<pthread_t> ts(static_cast<size_t>(threads));
    struct Arg {
      int kq;
      kq_kevent* changes;
    };
    static Arg arg;
    arg = Arg{kq, static_cast<kq_kevent*>(page)};
    for (auto& t : ts) {
      pthread_create(&t, nullptr,
                     [](void*) -> void* {
                       Kevent(arg.kq, arg.changes, 1, nullptr, 0, 0);
                       return nullptr;
                     },
                     nullptr);
    }
    for (auto& t : ts) pthread_join(t, nullptr);
    _exit(0);
  }
  if (!slow->file().WaitForRead(5000)) {
    int status = 0;
    pid_t done = waitpid(attacker, &status, WNOHANG);
    kill(attacker, SIGKILL);
    FAIL() << "the daemon never read the slow page; attacker "
           << (done == attacker ? "exited with status " + std::to_string(status) : "still running");
  }
  usleep(300000);  // every attacker thread has made its call
  int64_t worst = VictimWorstCallUs(device);
  EXPECT_GE(worst, 0) << "the victim was not served at all";
  EXPECT_LT(worst, kVictimBudgetUs);
  const int daemon_threads = CountThreads(SharedDaemon().pid());
  EXPECT_LE(daemon_threads - daemon_threads_before, 4)
      << "before " << daemon_threads_before << ", now " << daemon_threads;
  slow->file().ReleaseReads();
  const bool finished = ReapWithin(attacker, 5000);
  EXPECT_TRUE(finished) << "the attacker's calls did not finish";
  if (!finished) {
    kill(attacker, SIGKILL);
    ReapWithin(attacker, 1000);
  }
  slow.reset();
}

TEST_F(Serving, ChangelistOnASlowPageBlocksOnlyItsCaller) { SlowPageCase(device_, 1); }

TEST_F(Serving, ManySlowCallersOfOneUserHoldFewThreads) { SlowPageCase(device_, 80); }

// In a child of the test's own uid (root): waits for a 100 ms timer, then
// for a pipe that a second thread writes 100 ms into the wait — two events
// that the daemon's reactor thread delivers. Returns the longer of the two
// waits in µs, or -1 if either was not answered within `limit_ms`: the
// child is then killed, and if it cannot go yet (its request waits for a
// daemon thread that waits for the page) *unreaped is its pid, for the
// caller to reap once the page is released.
int64_t ReactorVictimWorstWaitUs(const std::string& device, int limit_ms, pid_t* unreaped) {
  *unreaped = -1;
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    int kq = open(device.c_str(), O_RDWR | O_CLOEXEC);
    int data[2];
    if (kq < 0 || pipe(data) != 0) _exit(2);
    kq_kevent out;
    kq_kevent timer = Ev(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 100);
    int64_t t = NowUs();
    if (Kevent(kq, &timer, 1, &out, 1, -1) != 1 || out.filter != EVFILT_TIMER) _exit(3);
    int64_t worst = NowUs() - t;
    kq_kevent read = Ev(static_cast<uint64_t>(data[0]), EVFILT_READ, EV_ADD);
    if (Kevent(kq, &read, 1, nullptr, 0, 0) != 0) _exit(4);
    std::thread writer([fd = data[1]] {
      usleep(100000);
      if (write(fd, "x", 1) != 1) _exit(5);
    });
    t = NowUs();
    if (Kevent(kq, nullptr, 0, &out, 1, -1) != 1 || out.filter != EVFILT_READ) _exit(6);
    worst = std::max(worst, NowUs() - t);
    writer.join();
    if (write(p[1], &worst, sizeof worst) != sizeof worst) _exit(7);
    _exit(0);
  }
  close(p[1]);
  int64_t worst = -1;
  pollfd pfd = {p[0], POLLIN, 0};
  if (poll(&pfd, 1, limit_ms) != 1 || read(p[0], &worst, sizeof worst) != sizeof worst) {
    worst = -1;
    kill(pid, SIGKILL);
  }
  close(p[0]);
  if (!ReapWithin(pid, 2000)) *unreaped = pid;
  return worst;
}

// A parked kevent whose eventlist lies on a page of a filesystem that does
// not answer (a MAP_PRIVATE writable mapping of the slow file, not faulted
// in): its timer fires on the reactor thread, and writing the event in
// must not hold that thread — other users' timers and fd events go on.
// (Before answers to parked calls went to the caller uid's answer lane, the
// reactor waited for the page and the victim's waits for as long.)
TEST_F(Serving, ParkedEventlistOnASlowPageStallsNoOtherUser) {
  std::string error;
  auto slow = SlowFileInTempDir::Mount(&error);
  ASSERT_TRUE(slow) << error;

  int report[2];
  ASSERT_EQ(pipe(report), 0);
  pid_t attacker = fork();
  ASSERT_GE(attacker, 0);
  if (attacker == 0) {
    close(report[0]);
    if (!BecomeNobody()) _exit(2);
    int kq = open(device_.c_str(), O_RDWR | O_CLOEXEC);
    int fd = open(slow->file().path().c_str(), O_RDONLY | O_CLOEXEC);
    if (kq < 0 || fd < 0) _exit(3);
    void* page = mmap(nullptr, SlowFile::kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (page == MAP_FAILED) _exit(4);
    // The timer is added from ordinary memory; the call then parks with
    // its eventlist on the slow page until the timer fires.
    kq_kevent timer = Ev(7, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 200);
    if (Kevent(kq, &timer, 1, nullptr, 0, 0) != 0) _exit(5);
    kq_kevent* events = static_cast<kq_kevent*>(page);
    int n = Kevent(kq, nullptr, 0, events, 1, -1);
    // What the page held once it arrived: the timer's event.
    int ok = n == 1 && events[0].ident == 7 && events[0].filter == EVFILT_TIMER;
    if (write(report[1], &ok, sizeof ok) != sizeof ok) _exit(6);
    _exit(0);
  }
  close(report[1]);
  const bool read_held = slow->file().WaitForRead(5000);
  pid_t victim = -1;
  if (read_held) {
    // The daemon is writing the attacker's event in and waits for the
    // page; another user's reactor-delivered events must still come.
    const int64_t limit_us = 1000000 * kSlowdown;
    const int64_t worst = ReactorVictimWorstWaitUs(device_, 10000, &victim);
    EXPECT_GE(worst, 0) << "the victim's timer or pipe event never came while the page was held";
    EXPECT_LT(worst, limit_us);
  }
  slow->file().ReleaseReads();
  if (victim > 0) EXPECT_TRUE(ReapWithin(victim, 5000)) << "the victim stayed stuck";
  int ok = 0;
  pollfd pfd = {report[0], POLLIN, 0};
  const bool answered =
      poll(&pfd, 1, 5000) == 1 && read(report[0], &ok, sizeof ok) == sizeof ok;
  close(report[0]);
  EXPECT_TRUE(read_held) << "the daemon never touched the parked call's eventlist";
  EXPECT_TRUE(answered) << "the parked call was not answered once the page arrived";
  EXPECT_EQ(ok, 1) << "the parked call's answer is wrong";
  if (!ReapWithin(attacker, 5000)) {
    kill(attacker, SIGKILL);
    ReapWithin(attacker, 1000);
  }
  slow.reset();
}

TEST_F(Serving, SigtermIsPromptDuringAHugeChangelist) {
  std::string error;
  auto daemon = DaemonFixture::Start(&error);
  ASSERT_TRUE(daemon) << error;
  if (daemon->pid() <= 0) GTEST_SKIP() << "an external daemon cannot be stopped here";
  Hog hog = StartHog(daemon->device(), 0);
  ASSERT_GT(hog.pid, 0);
  usleep(200000);
  int64_t t0 = NowUs();
  kill(daemon->pid(), SIGTERM);
  EXPECT_TRUE(ExitedWithin(daemon->pid(), 2000)) << "the daemon took more than 2 s to stop";
  EXPECT_LT(NowUs() - t0, 2000000);
  EXPECT_TRUE(ReapWithin(hog.pid, 2000)) << "the caller stayed stuck";
  kill(hog.pid, SIGKILL);
  ReapWithin(hog.pid, 1000);
  close(hog.report_fd);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
