/*
 * kqueue_demo: shows a running kqueued at work, through the raw ioctl ABI
 * (no client library needed). It registers a 200 ms timer, a user event
 * triggered by a child process, and a pipe a child writes to, then prints
 * every event as it arrives for about a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/kqueue_abi.h"

static int kevent_ioctl(int kq, const struct kq_kevent *changes, size_t nchanges,
                        struct kq_kevent *events, size_t nevents, long timeout_ms) {
  struct kq_kevent_args a;
  memset(&a, 0, sizeof a);
  a.changelist = (uint64_t)(uintptr_t)changes;
  a.nchanges = nchanges;
  a.eventlist = (uint64_t)(uintptr_t)events;
  a.nevents = nevents;
  a.flags = KQ_KEVENT_TIMEOUT;
  a.timeout_sec = timeout_ms / 1000;
  a.timeout_nsec = (timeout_ms % 1000) * 1000000L;
  return ioctl(kq, KQ_IOC_KEVENT, &a);
}

static struct kq_kevent ev(uint64_t ident, uint32_t filter, uint32_t flags,
                           uint32_t fflags, int64_t data, uint64_t udata) {
  struct kq_kevent e;
  memset(&e, 0, sizeof e);
  e.ident = ident;
  e.filter = filter;
  e.flags = flags;
  e.fflags = fflags;
  e.data = data;
  e.udata = udata;
  return e;
}

static const char *filter_name(int kq, uint32_t filter, char *buf, size_t len) {
  struct kfilter_mapping m;
  m.name = buf;
  m.len = len;
  m.filter = filter;
  if (ioctl(kq, KFILTER_BYFILTER, &m) != 0) snprintf(buf, len, "filter %u", filter);
  return buf;
}

static double now_ms(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (t.tv_sec - t0->tv_sec) * 1e3 + (t.tv_nsec - t0->tv_nsec) / 1e6;
}

int main(void) {
  const char *path = getenv(KQ_DEVICE_ENV);
  if (path == NULL) path = KQ_DEFAULT_DEVICE;
  int kq = open(path, O_RDWR | O_CLOEXEC);
  if (kq < 0) {
    fprintf(stderr, "demo: cannot open %s: %s (is kqueued running?)\n", path, strerror(errno));
    return 1;
  }
  struct kq_version v;
  if (ioctl(kq, KQ_IOC_VERSION, &v) != 0) {
    fprintf(stderr, "demo: %s does not answer the version ioctl: %s\n", path, strerror(errno));
    return 1;
  }
  printf("demo: %s is served by %s (ABI %u)\n", path, v.daemon_version, v.abi_version);

  int p[2];
  if (pipe(p) != 0) return 1;
  struct kq_kevent changes[3] = {
      ev(1, EVFILT_TIMER, EV_ADD, 0, 200, 0x7001),
      ev(2, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 0x7002),
      ev((uint64_t)p[0], EVFILT_READ, EV_ADD, 0, 0, 0x7003),
  };
  if (kevent_ioctl(kq, changes, 3, NULL, 0, 0) != 0) {
    fprintf(stderr, "demo: registering failed: %s\n", strerror(errno));
    return 1;
  }
  printf("demo: registered a 200 ms timer, a user event and pipe fd %d\n", p[0]);

  pid_t child = fork();
  if (child == 0) {
    /* Another process triggers the shared queue and writes to the pipe. */
    usleep(300000);
    struct kq_kevent trig = ev(2, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0);
    kevent_ioctl(kq, &trig, 1, NULL, 0, 0);
    usleep(200000);
    if (write(p[1], "hello from the child", 20) != 20) _exit(1);
    _exit(0);
  }

  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int seen_user = 0, seen_read = 0, seen_timer = 0;
  while (now_ms(&t0) < 1200) {
    struct kq_kevent out[8];
    int n = kevent_ioctl(kq, NULL, 0, out, 8, 1200 - (long)now_ms(&t0));
    if (n < 0) {
      fprintf(stderr, "demo: kevent: %s\n", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      char name[KFILTER_MAXNAME];
      printf("demo: %7.1f ms  %-13s ident=%llu data=%lld flags=%#x udata=%#llx\n",
             now_ms(&t0), filter_name(kq, out[i].filter, name, sizeof name),
             (unsigned long long)out[i].ident, (long long)out[i].data, out[i].flags,
             (unsigned long long)out[i].udata);
      if (out[i].filter == EVFILT_USER) seen_user = 1;
      if (out[i].filter == EVFILT_TIMER) seen_timer = 1;
      if (out[i].filter == EVFILT_READ) {
        char buf[64];
        seen_read = read(p[0], buf, sizeof buf) > 0;
      }
    }
  }
  waitpid(child, NULL, 0);
  int ok = seen_user && seen_read && seen_timer;
  printf("demo: %s\n", ok ? "timer, user and pipe events all arrived"
                          : "some events did not arrive");
  return ok ? 0 : 1;
}
