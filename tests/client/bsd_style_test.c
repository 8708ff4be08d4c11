/*
 * A kqueue regression test in the style of NetBSD's tests/kernel/kqueue,
 * written only against <sys/event.h> and POSIX: it would build unchanged on
 * NetBSD. Each case prints PASS, FAIL or SKIP; the last line is
 * "N passed, N failed", and the exit status is non-zero on any failure.
 *
 * A case is skipped (not failed) when EV_ADD of its filter answers EINVAL,
 * which is how kqueued reports a filter it has not implemented yet.
 */
#include <sys/types.h>
#include <sys/event.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int passed, failed, skipped;
static const char *current;
static int case_failed;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      printf("  %s:%d: %s: check failed: %s (errno %d: %s)\n", __FILE__,         \
             __LINE__, current, #cond, errno, strerror(errno));                 \
      case_failed = 1;                                                          \
    }                                                                           \
  } while (0)

/* Returns from the case when cond is false. */
#define REQUIRE(cond)                \
  do {                               \
    CHECK(cond);                     \
    if (case_failed) return;         \
  } while (0)

/* Skips the case when the daemon does not implement the filter. */
#define SKIP_IF_UNSUPPORTED(rc)                                               \
  do {                                                                        \
    if ((rc) < 0 && errno == EINVAL) {                                        \
      printf("SKIP %s: filter not implemented (EV_ADD gives EINVAL)\n", current); \
      skipped++;                                                              \
      case_failed = -1;                                                       \
      return;                                                                 \
    }                                                                         \
  } while (0)

static long elapsed_ms(const struct timespec *since) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long)(now.tv_sec - since->tv_sec) * 1000 +
         (now.tv_nsec - since->tv_nsec) / 1000000;
}

static void t_pipe_read(void) {
  int kq, fds[2], n;
  struct kevent ev;
  struct timespec ts = {1, 0};

  REQUIRE((kq = kqueue()) >= 0);
  REQUIRE(pipe(fds) == 0);
  EV_SET(&ev, fds[0], EVFILT_READ, EV_ADD, 0, 0, 0);
  SKIP_IF_UNSUPPORTED(kevent(kq, &ev, 1, NULL, 0, NULL));
  REQUIRE(write(fds[1], "abc", 3) == 3);
  n = kevent(kq, NULL, 0, &ev, 1, &ts);
  REQUIRE(n == 1);
  CHECK(ev.ident == (uintptr_t)fds[0]);
  CHECK(ev.filter == EVFILT_READ);
  CHECK(ev.data == 3);
  CHECK((ev.flags & EV_EOF) == 0);
  /* Level-triggered: still readable, reported again. */
  CHECK(kevent(kq, NULL, 0, &ev, 1, &ts) == 1);
  /* Drained: no event. */
  {
    char buf[3];
    struct timespec zero = {0, 0};
    CHECK(read(fds[0], buf, 3) == 3);
    CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 0);
  }
  /* Writer gone: EV_EOF. */
  close(fds[1]);
  n = kevent(kq, NULL, 0, &ev, 1, &ts);
  CHECK(n == 1);
  CHECK(n == 1 && (ev.flags & EV_EOF) != 0);
  close(fds[0]);
  close(kq);
}

static void t_timer(void) {
  int kq, n;
  struct kevent ev;
  struct timespec ts = {2, 0};
  struct timespec start;

  REQUIRE((kq = kqueue()) >= 0);
  EV_SET(&ev, 1, EVFILT_TIMER, EV_ADD, 0, 30, 0); /* every 30 ms */
  SKIP_IF_UNSUPPORTED(kevent(kq, &ev, 1, NULL, 0, NULL));
  clock_gettime(CLOCK_MONOTONIC, &start);
  n = kevent(kq, NULL, 0, &ev, 1, &ts);
  REQUIRE(n == 1);
  CHECK(ev.ident == 1);
  CHECK(ev.filter == EVFILT_TIMER);
  CHECK(ev.data >= 1);
  CHECK(elapsed_ms(&start) >= 25);
  /* Periodic: fires again; a 200 ms nap accumulates several expirations. */
  usleep(200 * 1000);
  n = kevent(kq, NULL, 0, &ev, 1, &ts);
  CHECK(n == 1);
  CHECK(n == 1 && ev.data >= 3);
  EV_SET(&ev, 1, EVFILT_TIMER, EV_DELETE, 0, 0, 0);
  CHECK(kevent(kq, &ev, 1, NULL, 0, NULL) == 0);
  /* A timer of 0 ms is invalid. */
  EV_SET(&ev, 2, EVFILT_TIMER, EV_ADD, 0, 0, 0);
  CHECK(kevent(kq, &ev, 1, NULL, 0, NULL) == -1 && errno == EINVAL);
  close(kq);
}

static void t_receipt(void) {
  int kq, fds[2], n;
  struct kevent changes[2], out[2];
  struct timespec zero = {0, 0};

  REQUIRE((kq = kqueue()) >= 0);
  REQUIRE(pipe(fds) == 0);
  EV_SET(&changes[0], fds[0], EVFILT_READ, EV_ADD, 0, 0, 0);
  SKIP_IF_UNSUPPORTED(kevent(kq, &changes[0], 1, NULL, 0, NULL));
  /* Readable already, yet EV_RECEIPT returns only the receipts. */
  REQUIRE(write(fds[1], "x", 1) == 1);
  EV_SET(&changes[0], fds[0], EVFILT_READ, EV_ADD | EV_RECEIPT, 0, 0, 0);
  EV_SET(&changes[1], fds[1], EVFILT_READ, EV_DELETE | EV_RECEIPT, 0, 0, 0);
  n = kevent(kq, changes, 2, out, 2, &zero);
  REQUIRE(n == 2);
  CHECK(out[0].ident == (uintptr_t)fds[0]);
  CHECK((out[0].flags & EV_ERROR) != 0 && out[0].data == 0);
  CHECK(out[1].ident == (uintptr_t)fds[1]);
  CHECK((out[1].flags & EV_ERROR) != 0 && out[1].data == ENOENT);
  close(fds[0]);
  close(fds[1]);
  close(kq);
}

static void t_oneshot(void) {
  int kq, fds[2];
  struct kevent ev;
  struct timespec zero = {0, 0};

  REQUIRE((kq = kqueue()) >= 0);
  REQUIRE(pipe(fds) == 0);
  REQUIRE(write(fds[1], "x", 1) == 1);
  EV_SET(&ev, fds[0], EVFILT_READ, EV_ADD | EV_ONESHOT, 0, 0, 0);
  SKIP_IF_UNSUPPORTED(kevent(kq, &ev, 1, NULL, 0, NULL));
  CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 1);
  CHECK((ev.flags & EV_ONESHOT) != 0);
  /* Still readable, but the knote is gone. */
  CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 0);
  EV_SET(&ev, fds[0], EVFILT_READ, EV_DELETE, 0, 0, 0);
  CHECK(kevent(kq, &ev, 1, NULL, 0, NULL) == -1 && errno == ENOENT);
  close(fds[0]);
  close(fds[1]);
  close(kq);
}

static void t_user(void) {
  int kq, n;
  struct kevent ev;
  struct timespec zero = {0, 0};

  REQUIRE((kq = kqueue()) >= 0);
  EV_SET(&ev, 1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, &kq);
  SKIP_IF_UNSUPPORTED(kevent(kq, &ev, 1, NULL, 0, NULL));
  CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 0);
  EV_SET(&ev, 1, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFOR | 0x5, 0, 0);
  REQUIRE(kevent(kq, &ev, 1, NULL, 0, NULL) == 0);
  n = kevent(kq, NULL, 0, &ev, 1, &zero);
  REQUIRE(n == 1);
  CHECK(ev.ident == 1 && ev.filter == EVFILT_USER);
  CHECK((ev.fflags & NOTE_FFLAGSMASK) == 0x5);
  CHECK(ev.udata == &kq);
  CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 0);
  close(kq);
}

static void t_timeouts(void) {
  int kq;
  struct kevent ev;
  struct timespec start;
  struct timespec zero = {0, 0};
  struct timespec short_wait = {0, 50 * 1000 * 1000};
  struct timespec bad = {0, 1000000000};

  REQUIRE((kq = kqueue()) >= 0);
  clock_gettime(CLOCK_MONOTONIC, &start);
  CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 0);
  CHECK(elapsed_ms(&start) < 50);
  clock_gettime(CLOCK_MONOTONIC, &start);
  CHECK(kevent(kq, NULL, 0, &ev, 1, &short_wait) == 0);
  CHECK(elapsed_ms(&start) >= 49);
  CHECK(kevent(kq, NULL, 0, &ev, 1, &bad) == -1 && errno == EINVAL);
  close(kq);
}

static void t_bad_fd(void) {
  int fds[2];
  struct kevent ev;
  struct timespec zero = {0, 0};

  CHECK(kevent(-1, NULL, 0, &ev, 1, &zero) == -1 && errno == EBADF);
  REQUIRE(pipe(fds) == 0);
  CHECK(kevent(fds[0], NULL, 0, &ev, 1, &zero) == -1 && errno == EBADF);
  close(fds[0]);
  close(fds[1]);
}

static void t_kfilter(void) {
  int kq;
  struct kfilter_mapping km;
  char name[KFILTER_MAXNAME];

  REQUIRE((kq = kqueue()) >= 0);
  memset(&km, 0, sizeof km);
  km.name = (char *)"EVFILT_READ";
  CHECK(ioctl(kq, KFILTER_BYNAME, &km) == 0 && km.filter == EVFILT_READ);
  km.name = name;
  km.len = sizeof name;
  km.filter = EVFILT_TIMER;
  CHECK(ioctl(kq, KFILTER_BYFILTER, &km) == 0 && strcmp(name, "EVFILT_TIMER") == 0);
  km.name = (char *)"EVFILT_BOGUS";
  CHECK(ioctl(kq, KFILTER_BYNAME, &km) == -1 && errno == ENOENT);
  close(kq);
}

static const struct {
  const char *name;
  void (*fn)(void);
} cases[] = {
    {"pipe_read", t_pipe_read}, {"timer", t_timer},       {"receipt", t_receipt},
    {"oneshot", t_oneshot},     {"user", t_user},         {"timeouts", t_timeouts},
    {"bad_fd", t_bad_fd},       {"kfilter", t_kfilter},
};

int main(void) {
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    current = cases[i].name;
    case_failed = 0;
    cases[i].fn();
    if (case_failed > 0) {
      printf("FAIL %s\n", current);
      failed++;
    } else if (case_failed == 0) {
      printf("PASS %s\n", current);
      passed++;
    }
    fflush(stdout);
  }
  if (skipped > 0) printf("%d skipped\n", skipped);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
