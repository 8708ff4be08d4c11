#include "daemon/core/reactor.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

namespace kqd {
namespace {

// epoll data values below this are the reactor's own fds, not tokens.
constexpr uint64_t kWakeKey = 0;
constexpr uint64_t kMonotonicKey = 1;
constexpr uint64_t kRealtimeKey = 2;
constexpr int64_t kFirstToken = 16;
// Events taken from the reactor's epoll per epoll_wait.
constexpr int kBatch = 64;
// A catch-up reads the epoll again while it returns full batches, at most
// this many times (a source that is always ready cannot hold a kevent).
constexpr int kMaxCatchUpRounds = 16;

// Set while this thread dispatches: a CatchUp() from inside a callback (or
// a hook) must not take the dispatch lock again.
thread_local bool t_dispatching = false;
// Set while this thread runs a CatchUp().
thread_local bool t_catching_up = false;

class DispatchingScope {
 public:
  DispatchingScope() { t_dispatching = true; }
  ~DispatchingScope() { t_dispatching = false; }
  DispatchingScope(const DispatchingScope&) = delete;
  DispatchingScope& operator=(const DispatchingScope&) = delete;
};

clockid_t ToClockId(Reactor::Clock c) {
  return c == Reactor::Clock::kMonotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME;
}

}  // namespace

Reactor::Reactor() : next_token_(kFirstToken) {
  ScopedFd ep(epoll_create1(EPOLL_CLOEXEC));
  ScopedFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ScopedFd mono(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  ScopedFd real(timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!ep || !wake || !mono || !real) return;
  const std::pair<int, uint64_t> own[] = {
      {wake.get(), kWakeKey}, {mono.get(), kMonotonicKey}, {real.get(), kRealtimeKey}};
  for (auto [fd, key] : own) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return;
  }
  wake_ = std::move(wake);
  heaps_[0].timerfd = std::move(mono);
  heaps_[1].timerfd = std::move(real);
  epoll_ = std::move(ep);  // last: ok() means fully built
}

Reactor::~Reactor() { Stop(); }

void Reactor::Start() {
  MutexLock l(mu_);
  if (thread_.joinable() || !ok()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void Reactor::Stop() {
  {
    MutexLock l(mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id())
    thread_.join();
}

void Reactor::Wake() {
  if (!wake_) return;
  uint64_t one = 1;
  ssize_t n = write(wake_.get(), &one, sizeof one);
  (void)n;  // EAGAIN means a wake is already pending: fine
}

int64_t Reactor::AddFd(int fd, uint32_t events, FdCallback cb) {
  MutexLock l(mu_);
  int64_t token = next_token_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = static_cast<uint64_t>(token);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return -errno;
  fd_callbacks_.emplace(token, std::move(cb));
  return token;
}

void Reactor::RemoveFd(int fd, int64_t token) {
  MutexLock l(mu_);
  fd_callbacks_.erase(token);
  if (fd >= 0) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

uint64_t Reactor::AddTimer(Clock clock, int64_t deadline_ns, TimerCallback cb) {
  MutexLock l(mu_);
  uint64_t id = next_timer_++;
  timers_.emplace(id, Timer{clock, deadline_ns, std::move(cb)});
  heap(clock).order.emplace(deadline_ns, id);
  RearmLocked(clock);
  return id;
}

void Reactor::CancelTimer(uint64_t id) {
  MutexLock l(mu_);
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  Clock clock = it->second.clock;
  heap(clock).order.erase({it->second.deadline_ns, id});
  timers_.erase(it);
  // The timerfd may stay armed for a deadline nobody wants; it then fires
  // once, finds nothing due and re-arms. Cheaper than re-arming here.
}

void Reactor::Post(Task task) {
  {
    MutexLock l(mu_);
    posted_.push_back(std::move(task));
  }
  Wake();
}

int64_t Reactor::Now(Clock clock) {
  timespec ts{};
  clock_gettime(ToClockId(clock), &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void Reactor::RearmLocked(Clock clock) {
  TimerHeap& h = heap(clock);
  int64_t want = h.order.empty() ? -1 : h.order.begin()->first;
  if (want == h.armed_ns) return;
  itimerspec its{};
  int flags = 0;
  if (want >= 0) {
    // A deadline at or before the epoch would disarm the timer: use 1 ns.
    int64_t at = want > 0 ? want : 1;
    its.it_value.tv_sec = at / 1000000000;
    its.it_value.tv_nsec = at % 1000000000;
    flags = TFD_TIMER_ABSTIME;
    // A realtime timer must notice clock jumps (NOTE_ABSTIME deadlines).
    if (clock == Clock::kRealtime) flags |= TFD_TIMER_CANCEL_ON_SET;
  }
  timerfd_settime(h.timerfd.get(), flags, &its, nullptr);
  h.armed_ns = want;
}

void Reactor::FireTimers(Clock clock) {
  uint64_t expirations;
  // ECANCELED (realtime clock was set) is expected: just re-evaluate.
  ssize_t n = read(timerfd(clock), &expirations, sizeof expirations);
  (void)n;
  std::vector<TimerCallback> due;
  {
    MutexLock l(mu_);
    TimerHeap& h = heap(clock);
    int64_t now = Now(clock);
    while (!h.order.empty() && h.order.begin()->first <= now) {
      uint64_t id = h.order.begin()->second;
      h.order.erase(h.order.begin());
      auto it = timers_.find(id);
      if (it != timers_.end()) {
        due.push_back(std::move(it->second.cb));
        timers_.erase(it);
      }
    }
    h.armed_ns = -2;  // force a re-arm: the fd is disarmed after firing
    RearmLocked(clock);
  }
  for (auto& cb : due) cb();
}

uint64_t Reactor::AddCatchUpHook(Task hook) {
  MutexLock l(mu_);
  const uint64_t id = next_hook_++;
  catch_up_hooks_.emplace(id, std::move(hook));
  return id;
}

void Reactor::RemoveCatchUpHook(uint64_t id) {
  MutexLock l(mu_);
  catch_up_hooks_.erase(id);
}

void Reactor::CatchUp() {
  if (t_dispatching || !ok()) return;
  MutexLock d(dispatch_mu_);
  DispatchingScope scope;
  t_catching_up = true;
  struct Reset {
    ~Reset() { t_catching_up = false; }
  } reset;
  std::vector<Task> hooks;
  {
    MutexLock l(mu_);
    if (stopping_) return;
    hooks.reserve(catch_up_hooks_.size());
    for (const auto& [id, hook] : catch_up_hooks_) hooks.push_back(hook);
  }
  // Sources whose readiness lags first: what they report may make other
  // fds ready (an exit found in a ring, say), which the epoll pass sees.
  for (auto& hook : hooks) hook();
  epoll_event events[kBatch];
  for (int round = 0; round < kMaxCatchUpRounds; round++) {
    const int n = epoll_wait(epoll_.get(), events, kBatch, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    DispatchLocked(events, n, /*catch_up=*/true);
    if (n < kBatch) break;
  }
  // Tasks posted by the callbacks above (or before) run now too.
  RunPostedLocked();
}

bool Reactor::CatchingUp() { return t_catching_up; }

void Reactor::RunPostedLocked() {
  std::vector<Task> tasks;
  {
    MutexLock l(mu_);
    if (stopping_) return;
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t();
}

bool Reactor::DispatchLocked(const epoll_event* events, int n, bool catch_up) {
  for (int i = 0; i < n; i++) {
    const uint64_t key = events[i].data.u64;
    if (key == kWakeKey) {
      // The eventfd is the loop thread's: Stop() wakes it through it.
      if (catch_up) continue;
      uint64_t v;
      ssize_t r = read(wake_.get(), &v, sizeof v);
      (void)r;
      {
        MutexLock l(mu_);
        if (stopping_) return false;
      }
      RunPostedLocked();
    } else if (key == kMonotonicKey) {
      FireTimers(Clock::kMonotonic);
    } else if (key == kRealtimeKey) {
      FireTimers(Clock::kRealtime);
    } else {
      FdCallback cb;
      {
        MutexLock l(mu_);
        auto it = fd_callbacks_.find(static_cast<int64_t>(key));
        if (it == fd_callbacks_.end()) continue;
        cb = it->second;  // a copy: the callback may remove itself
      }
      cb(events[i].events);
    }
  }
  return true;
}

void Reactor::Loop() {
  epoll_event events[kBatch];
  for (;;) {
    int n = epoll_wait(epoll_.get(), events, kBatch, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    // A catching-up thread may have handled some of these meanwhile: every
    // callback copes with finding nothing to read.
    MutexLock d(dispatch_mu_);
    DispatchingScope scope;
    if (!DispatchLocked(events, n, /*catch_up=*/false)) return;
  }
}

}  // namespace kqd
