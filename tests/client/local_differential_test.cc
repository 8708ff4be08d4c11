// A differential random test of the library's fast path (ABI 4 local
// collection; client/README.md "The fast path"): a seeded generator drives
// two queues in lockstep, one made with the fast path and one made with
// $KQUEUE_LOCAL=0 (the ordinary path, every call to the daemon), over the
// same pipes and FIFO: random changelists (every flag the fast path must
// take or refuse, NOTE_LOWAT, bad descriptors, several changes of one
// knote, less room than answers), random writes, reads, closes of either
// end and reopenings of a number with a new pipe, and zero-timeout harvests
// with random room. Each call is made on queue A and then at once on queue
// B (nothing changes the pipes in between), and the two results (return
// value, errno, every field of every event) must be equal.
//
// With less room than ready events each path may fairly pick different
// ones; then both queues are harvested again at once with ample room and
// the union of the two answers (an event reported twice must be reported
// the same) must be equal: a level-triggered knote shows in both, a
// one-shot, dispatched or cleared one in exactly one of them on each side.
//
// Seeds 1..kFixedSeeds run always; $KQD_DIFF_SEEDS=N runs N more, drawn at
// random (each failure prints its seed and the last steps; $KQD_DIFF_SEED=S
// reruns seed S alone, $KQD_DIFF_STEPS=K changes the steps per seed).
#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/client/client_test_support.h"

namespace {

std::atomic<int> g_watched_kq{-1};     // the fast-path queue of the seed running
std::atomic<int> g_watched_ioctls{0};  // kevent ioctls sent on it
std::atomic<int> g_attached{0};        // successful KQ_IOC_LOCAL_ATTACH

bool IsKevent(unsigned long request) {
  return request == KQ_IOC_KEVENT || request == KQ_IOC_KEVENT_INLINE_1 ||
         request == KQ_IOC_KEVENT_INLINE_8 || request == KQ_IOC_KEVENT_INLINE_64 ||
         request == KQ_IOC_KEVENT_INLINE_408;
}

}  // namespace

// The statically linked library calls this ioctl(): it counts the daemon
// calls of the fast-path queue (how many harvests it answered itself).
extern "C" int ioctl(int fd, unsigned long request, ...) __THROW {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (IsKevent(request) && fd == g_watched_kq.load()) g_watched_ioctls++;
  int rc = static_cast<int>(syscall(SYS_ioctl, fd, request, arg));
  if (request == KQ_IOC_LOCAL_ATTACH && rc == 0) g_attached++;
  return rc;
}

namespace kqd {
namespace client_test {
namespace {

constexpr int kFixedSeeds = 40;
constexpr int kDefaultSteps = 400;
constexpr size_t kAmpleRoom = 256;  // more than the knotes a run can make
constexpr size_t kHistory = 60;     // steps printed with a divergence

const struct timespec kZero = {0, 0};

int EnvInt(const char* name, int fallback) {
  const char* v = getenv(name);
  return v != nullptr && *v != '\0' ? atoi(v) : fallback;
}

// A kqueue made with $KQUEUE_LOCAL=0 (no fast path) or as the environment
// has it; *fast says whether the library attached it.
int MakeQueue(bool allow_local, bool* fast) {
  const char* was = getenv("KQUEUE_LOCAL");
  std::string saved = was != nullptr ? was : "";
  if (!allow_local) setenv("KQUEUE_LOCAL", "0", 1);
  const int before = g_attached.load();
  int kq = kqueue();
  *fast = g_attached.load() > before;
  if (!allow_local) {
    if (was != nullptr) {
      setenv("KQUEUE_LOCAL", saved.c_str(), 1);
    } else {
      unsetenv("KQUEUE_LOCAL");
    }
  }
  return kq;
}

std::string Show(const struct kevent& e) {
  // The padding after fflags is the ABI's `reserved` word: shown when set.
  uint32_t reserved = 0;
  memcpy(&reserved, reinterpret_cast<const char*>(&e) + offsetof(struct kq_kevent, reserved),
         sizeof reserved);
  char buf[200];
  snprintf(buf, sizeof buf, "{%lu %s flags %#x fflags %#x data %ld udata %p%s}",
           static_cast<unsigned long>(e.ident),
           e.filter == EVFILT_READ ? "READ" : e.filter == EVFILT_WRITE ? "WRITE" : "?", e.flags,
           e.fflags, static_cast<long>(e.data), e.udata,
           reserved != 0 ? (" reserved " + std::to_string(reserved)).c_str() : "");
  return buf;
}

std::string ShowAll(const std::vector<struct kevent>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? " " : "") + Show(v[i]);
  return s + "]";
}

bool Less(const struct kevent& a, const struct kevent& b) {
  if (a.ident != b.ident) return a.ident < b.ident;
  if (a.filter != b.filter) return a.filter < b.filter;
  return memcmp(&a, &b, sizeof a) < 0;
}

bool Same(const struct kevent& a, const struct kevent& b) { return memcmp(&a, &b, sizeof a) == 0; }

bool SameList(const std::vector<struct kevent>& a, const std::vector<struct kevent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (!Same(a[i], b[i])) return false;
  return true;
}

// One kevent() result.
struct Result {
  int rc = 0;
  int err = 0;
  std::vector<struct kevent> events;  // rc of them, as returned

  std::string ToString() const {
    if (rc < 0) return "-1 (" + std::string(strerror(err)) + ")";
    return std::to_string(rc) + " " + ShowAll(events);
  }
};

Result Call(int kq, const std::vector<struct kevent>& changes, size_t nevents) {
  Result r;
  std::vector<struct kevent> out(nevents + 1);
  errno = 0;
  r.rc = kevent(kq, changes.empty() ? nullptr : changes.data(), changes.size(),
                nevents == 0 ? nullptr : out.data(), nevents, &kZero);
  r.err = errno;
  if (r.rc > 0) out.resize(static_cast<size_t>(r.rc)), r.events = out;
  return r;
}

// One pipe (r != w) or one FIFO opened for both ways (r == w), at fixed
// descriptor numbers for the whole run.
struct Slot {
  int r = -1;
  int w = -1;
  bool fifo = false;
  bool r_open = false;
  bool w_open = false;
};

// One seed's run: the queues, the files, the generator, the history.
class Walk {
 public:
  Walk(uint64_t seed, int steps, const std::string& fifo_path)
      : seed_(seed), steps_(steps), fifo_path_(fifo_path), rng_(seed),
        rare_(seed % 4 == 0 ? 0.0 : seed % 2 == 0 ? 0.15 : 1.0) {}
  ~Walk() {
    g_watched_kq = -1;
    if (a_ >= 0) close(a_);
    if (b_ >= 0) close(b_);
    if (sync_ >= 0) close(sync_);
    for (const Slot& s : slots_) {
      if (s.r_open) close(s.r);
      if (s.w_open && s.w != s.r) close(s.w);
    }
  }
  Walk(const Walk&) = delete;
  Walk& operator=(const Walk&) = delete;

  // Runs every step; false (with *why) at the first divergence.
  bool Go(std::string* why);

  int local_harvests() const { return local_harvests_; }
  int harvests() const { return harvests_; }
  bool fast() const { return fast_; }

 private:
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  template <typename T>
  T Pick(const std::vector<T>& v) {
    return v[Below(static_cast<uint32_t>(v.size()))];
  }

  bool Setup(std::string* why);
  void Log(const std::string& line);
  std::string History() const;

  uintptr_t RandomIdent();
  struct kevent RandomChange(uintptr_t ident);
  bool StepChanges(std::string* why);
  bool StepHarvest(std::string* why);
  void StepWrite();
  void StepRead();
  bool StepClose(std::string* why);
  bool StepReopen(std::string* why);
  bool BeforeClose(std::string* why);
  void Settle();

  // Calls both queues with the same arguments and compares (see the file
  // comment); false with *why on a divergence.
  bool Both(const std::vector<struct kevent>& changes, size_t nevents, bool harvest,
            std::string* why);

  const uint64_t seed_;
  const int steps_;
  const std::string fifo_path_;
  std::mt19937_64 rng_;
  // How often the changes that make a knote the daemon's (EV_CLEAR,
  // EV_ONESHOT, EV_DISPATCH, NOTE_LOWAT, the other end's filter) come: an
  // even seed makes them rare (a multiple of 4: absent), so that more
  // harvests are the fast path's
  // alone (the daemon's ready knotes send a harvest to the daemon).
  const double rare_;
  int a_ = -1;  // fast path
  int b_ = -1;  // ordinary path
  int sync_ = -1;  // an empty ordinary queue: see Settle()
  bool fast_ = false;
  std::vector<Slot> slots_;
  std::vector<uintptr_t> bad_;  // numbers never open
  std::deque<std::string> history_;
  int step_ = 0;
  int harvests_ = 0;
  int local_harvests_ = 0;  // harvests the fast-path queue answered alone
};

bool Walk::Setup(std::string* why) {
  a_ = MakeQueue(true, &fast_);
  bool b_fast = false;
  b_ = MakeQueue(false, &b_fast);
  if (a_ < 0 || b_ < 0 || b_fast) {
    *why = "cannot make the two queues: " + std::string(strerror(errno));
    return false;
  }
  bool sync_fast = false;
  sync_ = MakeQueue(false, &sync_fast);
  if (sync_ < 0) {
    *why = "cannot make the third queue: " + std::string(strerror(errno));
    return false;
  }
  g_watched_kq = a_;
  for (int i = 0; i < 3; i++) {
    int p[2];
    if (pipe2(p, O_NONBLOCK) != 0) {
      *why = "pipe2";
      return false;
    }
    Slot s;
    s.r = p[0];
    s.w = p[1];
    s.r_open = s.w_open = true;
    slots_.push_back(s);
  }
  int f = open(fifo_path_.c_str(), O_RDWR | O_NONBLOCK);
  if (f < 0) {
    *why = "open fifo: " + std::string(strerror(errno));
    return false;
  }
  Slot s;
  s.r = s.w = f;
  s.fifo = true;
  s.r_open = s.w_open = true;
  slots_.push_back(s);
  // A number no file has (well above what the run opens), and one past
  // what the library follows by number.
  for (int n = 900; n < 1000 && bad_.empty(); n++)
    if (fcntl(n, F_GETFD) < 0 && errno == EBADF) bad_.push_back(static_cast<uintptr_t>(n));
  bad_.push_back(static_cast<uintptr_t>(INT_MAX) + 7);
  return true;
}

void Walk::Log(const std::string& line) {
  history_.push_back("step " + std::to_string(step_) + ": " + line);
  if (history_.size() > kHistory) history_.pop_front();
}

std::string Walk::History() const {
  std::string s;
  for (const std::string& line : history_) s += "  " + line + "\n";
  return s;
}

uintptr_t Walk::RandomIdent() {
  if (Chance(0.08)) return Pick(bad_);
  const Slot& s = slots_[Below(static_cast<uint32_t>(slots_.size()))];
  return static_cast<uintptr_t>(Chance(0.5) ? s.r : s.w);
}

struct kevent Walk::RandomChange(uintptr_t ident) {
  static const std::vector<uint32_t> kOps = {
      EV_ADD, EV_ADD, EV_ADD, EV_ADD | EV_ENABLE, EV_ADD | EV_DISABLE, EV_DELETE,
      EV_DELETE, EV_ENABLE, EV_DISABLE, 0,
  };
  // The filter that fits the end, mostly.
  uint32_t filter = EVFILT_READ;
  for (const Slot& s : slots_) {
    if (static_cast<uintptr_t>(s.w) == ident && s.w != s.r) filter = EVFILT_WRITE;
  }
  if (Chance(0.25 * rare_) || ident == static_cast<uintptr_t>(slots_.back().r))
    filter = Chance(0.5) ? EVFILT_READ : EVFILT_WRITE;
  uint32_t flags = Pick(kOps);
  if (Chance(0.12 * rare_)) flags |= EV_CLEAR;
  if (Chance(0.08 * rare_)) flags |= EV_ONESHOT;
  if (Chance(0.08 * rare_)) flags |= EV_DISPATCH;
  if (Chance(0.12)) flags |= EV_RECEIPT;
  uint32_t fflags = 0;
  int64_t data = 0;
  if (Chance(0.1 * rare_)) {
    fflags = NOTE_LOWAT;
    data = Pick(std::vector<int64_t>{0, 1, 100, 512, 4096, 5000, 70000});
  }
  void* udata = reinterpret_cast<void*>(static_cast<uintptr_t>(Below(4)));
  return Ev(ident, filter, flags, fflags, data, udata);
}

bool Walk::Both(const std::vector<struct kevent>& changes, size_t nevents, bool harvest,
               std::string* why) {
  const int ioctls_before = g_watched_ioctls.load();
  Result ra = Call(a_, changes, nevents);
  const int ioctls = g_watched_ioctls.load() - ioctls_before;
  Result rb = Call(b_, changes, nevents);
  if (harvest) {
    harvests_++;
    if (ioctls == 0) local_harvests_++;
  }
  std::string call = "kevent(" + ShowAll(changes) + ", " + std::to_string(nevents) + ")";
  Log(call + " -> A " + ra.ToString() + " | B " + rb.ToString());
  auto fail = [&](const std::string& what) {
    *why = "seed " + std::to_string(seed_) + " step " + std::to_string(step_) + ": " + what +
           "\n  call " + call + "\n  A (fast path) " + ra.ToString() +
           "\n  B (KQUEUE_LOCAL=0) " + rb.ToString() + "\nlast steps:\n" + History();
    return false;
  };
  if (ra.rc != rb.rc) return fail("return values differ");
  if (ra.rc < 0) return ra.err == rb.err ? true : fail("errno differs");
  // Answers (EV_ERROR/EV_RECEIPT records) come in the changes' order.
  const bool answers = ra.rc > 0 && ((ra.events[0].flags & EV_ERROR) ||
                                     (rb.events[0].flags & EV_ERROR));
  if (answers) return SameList(ra.events, rb.events) ? true : fail("answers differ");
  std::vector<struct kevent> ea = ra.events, eb = rb.events;
  std::sort(ea.begin(), ea.end(), Less);
  std::sort(eb.begin(), eb.end(), Less);
  if (static_cast<size_t>(ra.rc) < nevents || ra.rc == 0)
    return SameList(ea, eb) ? true : fail("events differ");
  // The room was full: each path may have picked other events. The union
  // with an ample harvest made at once after must be equal.
  Result fa = Call(a_, {}, kAmpleRoom);
  Result fb = Call(b_, {}, kAmpleRoom);
  Log("  ample harvest -> A " + fa.ToString() + " | B " + fb.ToString());
  if (fa.rc < 0 || fb.rc < 0) return fail("the ample harvest failed");
  auto unite = [](const std::vector<struct kevent>& first,
                  const std::vector<struct kevent>& then, std::string* clash) {
    std::map<std::pair<uintptr_t, uint32_t>, struct kevent> u;
    for (const auto* v : {&first, &then}) {
      for (const struct kevent& e : *v) {
        auto it = u.find({e.ident, e.filter});
        if (it == u.end()) {
          u[{e.ident, e.filter}] = e;
        } else if (!Same(it->second, e)) {
          *clash = Show(it->second) + " then " + Show(e);
        }
      }
    }
    std::vector<struct kevent> out;
    for (const auto& kv : u) out.push_back(kv.second);
    return out;
  };
  std::string clash_a, clash_b;
  std::vector<struct kevent> ua = unite(ra.events, fa.events, &clash_a);
  std::vector<struct kevent> ub = unite(rb.events, fb.events, &clash_b);
  if (!clash_a.empty()) return fail("A reported one knote two ways: " + clash_a);
  if (!clash_b.empty()) return fail("B reported one knote two ways: " + clash_b);
  if (!SameList(ua, ub))
    return fail("with the ample harvest after (A " + fa.ToString() + " | B " + fb.ToString() +
                "), the events differ: A " + ShowAll(ua) + " | B " + ShowAll(ub));
  return true;
}

bool Walk::StepChanges(std::string* why) {
  std::vector<struct kevent> changes;
  const uint32_t n = 1 + Below(4);
  for (uint32_t i = 0; i < n; i++) {
    // Several changes of one descriptor in one list, often.
    uintptr_t ident = !changes.empty() && Chance(0.35) ? changes.back().ident : RandomIdent();
    changes.push_back(RandomChange(ident));
  }
  size_t nevents = Pick(std::vector<size_t>{0, 1, 2, 3, 8, 64, 64});
  // More answers than room fails the call leaving unknown which changes
  // applied, and the fast path gives up for good: the seeds that keep to
  // the fast path's knotes keep room for every answer too.
  if (rare_ == 0.0 && nevents != 0 && nevents < changes.size()) nevents = changes.size();
  return Both(changes, nevents, false, why);
}

bool Walk::StepHarvest(std::string* why) {
  const size_t nevents = Pick(std::vector<size_t>{1, 2, 3, 5, 64});
  return Both({}, nevents, true, why);
}

void Walk::StepWrite() {
  static char buf[70000];
  Slot& s = slots_[Below(static_cast<uint32_t>(slots_.size()))];
  if (!s.w_open) return;
  const size_t len = Pick(std::vector<size_t>{1, 100, 511, 512, 4096, 5000, 70000});
  ssize_t n = write(s.w, buf, len);
  Log("write(" + std::to_string(s.w) + ", " + std::to_string(len) + ") = " + std::to_string(n));
}

void Walk::StepRead() {
  static char buf[100000];
  Slot& s = slots_[Below(static_cast<uint32_t>(slots_.size()))];
  if (!s.r_open) return;
  const size_t len = Pick(std::vector<size_t>{1, 100, 4096, 100000});
  ssize_t n = read(s.r, buf, len);
  Log("read(" + std::to_string(s.r) + ", " + std::to_string(len) + ") = " + std::to_string(n));
}

// Before a file of the run is closed, both queues collect everything (the
// daemon's scan takes in every wake-up of the file so far): the daemon
// hears of a write on its own thread, and a wake-up not yet taken in when
// the file goes is lost with the file's epoll item, while one taken in
// queues the knote, and an EV_ONESHOT knote is then reported even after
// the close (seen with the ordinary path alone: timing, not the fast path).
// After a write, read or close, a harvest of the empty third queue: the
// daemon hears of what the step did to its watched files on its own
// thread, and takes in everything recorded so far before a scan (any
// queue's), but not before the changes of a call: without this, the next
// changelist's outcome would hang on that thread's timing (an EV_ONESHOT
// knote woken by the write and re-enabled by the changes is reported or
// not), with the ordinary path alone.
void Walk::Settle() {
  struct kevent ev;
  kevent(sync_, nullptr, 0, &ev, 1, &kZero);
}

bool Walk::BeforeClose(std::string* why) { return Both({}, kAmpleRoom, true, why); }

bool Walk::StepClose(std::string* why) {
  Slot& s = slots_[Below(static_cast<uint32_t>(slots_.size()))];
  if (!BeforeClose(why)) return false;
  if (s.fifo) {
    if (!s.r_open) return true;
    close(s.r);
    s.r_open = s.w_open = false;
    Log("close fifo " + std::to_string(s.r));
    return true;
  }
  const bool reader = Chance(0.5);
  if (reader && s.r_open) {
    close(s.r);
    s.r_open = false;
    Log("close read end " + std::to_string(s.r));
  } else if (!reader && s.w_open) {
    close(s.w);
    s.w_open = false;
    Log("close write end " + std::to_string(s.w));
  }
  return true;
}

// fd moved to a number above the slots' (a fresh file may get the number of
// a closed slot end, which dup2 is about to fill); -1 stays -1.
static int High(int fd) {
  if (fd < 0) return fd;
  int high = fcntl(fd, F_DUPFD, 500);
  close(fd);
  return high;
}

bool Walk::StepReopen(std::string* why) {
  Slot& s = slots_[Below(static_cast<uint32_t>(slots_.size()))];
  if (!BeforeClose(why)) return false;
  if (s.fifo) {
    int f = High(open(fifo_path_.c_str(), O_RDWR | O_NONBLOCK));
    if (f < 0) return true;
    dup2(f, s.r);
    close(f);
    s.r_open = s.w_open = true;
    Log("reopen fifo at " + std::to_string(s.r));
    return true;
  }
  int p[2];
  if (pipe2(p, O_NONBLOCK) != 0) return true;
  p[0] = High(p[0]);
  p[1] = High(p[1]);
  dup2(p[0], s.r);
  dup2(p[1], s.w);
  close(p[0]);
  close(p[1]);
  s.r_open = s.w_open = true;
  Log("new pipe at " + std::to_string(s.r) + "/" + std::to_string(s.w));
  return true;
}

bool Walk::Go(std::string* why) {
  if (!Setup(why)) return false;
  for (step_ = 0; step_ < steps_; step_++) {
    const uint32_t op = Below(100);
    if (op < 40) {
      if (!StepChanges(why)) return false;
    } else if (op < 60) {
      if (!StepHarvest(why)) return false;
    } else if (op < 78) {
      StepWrite();
      Settle();
    } else if (op < 90) {
      StepRead();
      Settle();
    } else if (op < 95) {
      if (!StepClose(why)) return false;
      Settle();
    } else {
      if (!StepReopen(why)) return false;
      Settle();
    }
  }
  // The end: one more comparison of everything ready.
  return Both({}, kAmpleRoom, true, why);
}

class LocalDifferential : public ClientTest {
 protected:
  void SetUp() override {
    ClientTest::SetUp();
    signal(SIGPIPE, SIG_IGN);  // writes to pipes whose reader is gone
    const char* tmp = getenv("TEST_TMPDIR");
    fifo_path_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/diff_fifo." +
                 std::to_string(getpid());
    unlink(fifo_path_.c_str());
    ASSERT_EQ(mkfifo(fifo_path_.c_str(), 0600), 0) << strerror(errno);
  }
  void TearDown() override { unlink(fifo_path_.c_str()); }

  // Runs the seeds; every divergence is a failure naming its seed.
  void RunSeeds(const std::vector<uint64_t>& seeds) {
    const int steps = EnvInt("KQD_DIFF_STEPS", kDefaultSteps);
    int harvests = 0, local = 0, fast = 0;
    for (uint64_t seed : seeds) {
      Walk run(seed, steps, fifo_path_);
      std::string why;
      EXPECT_TRUE(run.Go(&why)) << why;
      harvests += run.harvests();
      local += run.local_harvests();
      fast += run.fast() ? 1 : 0;
    }
    printf("%zu seeds x %d steps (%d with the fast path): %d of %d harvests answered without "
           "the daemon\n",
           seeds.size(), steps, fast, local, harvests);
  }

  std::string fifo_path_;
};

TEST_F(LocalDifferential, FixedSeedsAnswerAsTheDaemon) {
  std::vector<uint64_t> seeds;
  const int only = EnvInt("KQD_DIFF_SEED", 0);
  if (only != 0) {
    seeds.push_back(static_cast<uint64_t>(only));
  } else {
    for (int s = 1; s <= kFixedSeeds; s++) seeds.push_back(static_cast<uint64_t>(s));
  }
  RunSeeds(seeds);
}

TEST_F(LocalDifferential, MoreSeedsFromTheEnvironment) {
  const int more = EnvInt("KQD_DIFF_SEEDS", 0);
  if (more <= 0) GTEST_SKIP() << "set KQD_DIFF_SEEDS=N to run N random seeds";
  std::random_device dev;
  std::vector<uint64_t> seeds;
  for (int i = 0; i < more; i++)
    seeds.push_back((static_cast<uint64_t>(dev()) << 32 | dev()) & 0x7fffffffu);
  RunSeeds(seeds);
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
