/*
 * peer_bench: the fast-path issue's figures for one kqueue implementation,
 * next to epoll in the same process. A program that prints figures, not a
 * test. Written against the BSD API only (kqueue, kevent, EV_SET), so the
 * same source is compiled against kqueued's <sys/event.h> and library and
 * against libkqueue's: bench/peer/run-peer-bench.sh builds both and prints
 * them side by side.
 *
 *   peer_bench [--quick] [--label NAME]
 *
 * Prints one line per figure: "figure<TAB>unit<TAB>epoll<TAB>kqueue".
 * Each time is the best of many ~2 ms batches (as kqbench: interference only
 * ever adds time). Placement is the caller's (taskset).
 */
#define _GNU_SOURCE
#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int g_quick = 0;

static void Die(const char *what) {
  fprintf(stderr, "peer_bench: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double NowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Nanoseconds per call of op(arg): the best of many ~2 ms batches. */
static double BestNs(void (*op)(void *), void *arg) {
  const double batch_ns = 2e6;
  const int batches = g_quick ? 15 : 60;
  long n = 1;
  for (;;) {
    double t0 = NowNs();
    for (long i = 0; i < n; i++) op(arg);
    double dt = NowNs() - t0;
    if (dt > batch_ns / 4 || n > (1L << 30)) {
      n = (long)(n * batch_ns / (dt > 1 ? dt : 1));
      if (n < 1) n = 1;
      break;
    }
    n *= 4;
  }
  double best = 1e300;
  for (int b = 0; b < batches; b++) {
    double t0 = NowNs();
    for (long i = 0; i < n; i++) op(arg);
    double per = (NowNs() - t0) / n;
    if (per < best) best = per;
  }
  return best;
}

struct pipe_pair {
  int r, w;
};

static struct pipe_pair *NewPipes(int n, int fill) {
  struct pipe_pair *p = calloc((size_t)n, sizeof *p);
  if (p == NULL) Die("calloc");
  for (int i = 0; i < n; i++) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) Die("pipe2");
    p[i].r = fds[0];
    p[i].w = fds[1];
    if (fill && write(p[i].w, "x", 1) != 1) Die("write");
  }
  return p;
}

static void ClosePipes(struct pipe_pair *p, int n) {
  for (int i = 0; i < n; i++) {
    close(p[i].r);
    close(p[i].w);
  }
  free(p);
}

static const struct timespec kZero = {0, 0};

static int NewKq(void) {
  int kq = kqueue();
  if (kq < 0) Die("kqueue");
  return kq;
}

static void KqChange(int kq, int fd, int flags) {
  struct kevent ch;
  EV_SET(&ch, fd, EVFILT_READ, flags, 0, 0, 0);
  if (kevent(kq, &ch, 1, NULL, 0, NULL) != 0) Die("kevent change");
}

/* ---- harvest: one ready pipe, level-triggered, zero timeout -------------- */

struct harvest {
  int fd;     /* epoll or kqueue */
  int want;   /* events per call */
  void *out;  /* room for `want` */
};

static void EpollHarvest(void *arg) {
  struct harvest *h = arg;
  if (epoll_wait(h->fd, h->out, h->want, 0) != h->want) Die("epoll_wait");
}

static void KqHarvest(void *arg) {
  struct harvest *h = arg;
  if (kevent(h->fd, NULL, 0, h->out, h->want, &kZero) != h->want) Die("kevent harvest");
}

/* Time per call harvesting `want` of `npipes` ready pipes. */
static void Harvest(int npipes, int want, double *epoll_ns, double *kq_ns) {
  struct pipe_pair *p = NewPipes(npipes, 1);
  struct epoll_event *eout = calloc((size_t)want, sizeof *eout);
  struct kevent *kout = calloc((size_t)want, sizeof *kout);
  if (eout == NULL || kout == NULL) Die("calloc");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) Die("epoll_create1");
  for (int i = 0; i < npipes; i++) {
    struct epoll_event ee;
    memset(&ee, 0, sizeof ee);
    ee.events = EPOLLIN;
    ee.data.fd = p[i].r;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, p[i].r, &ee) != 0) Die("epoll_ctl");
  }
  struct harvest h = {ep, want, eout};
  *epoll_ns = BestNs(EpollHarvest, &h);
  close(ep);
  int kq = NewKq();
  for (int i = 0; i < npipes; i++) KqChange(kq, p[i].r, EV_ADD);
  struct harvest k = {kq, want, kout};
  *kq_ns = BestNs(KqHarvest, &k);
  close(kq);
  free(eout);
  free(kout);
  ClosePipes(p, npipes);
}

/* ---- wake-up round trip --------------------------------------------------- */

struct wakeup {
  int use_kq;
  int q[2];  /* q[0]: A waits on pipe 2; q[1]: B waits on pipe 1 */
  struct pipe_pair p[2];
  atomic_int stop;
};

static void WaitOn(struct wakeup *w, int who) {
  if (w->use_kq) {
    struct kevent out;
    while (kevent(w->q[who], NULL, 0, &out, 1, NULL) != 1) {
    }
  } else {
    struct epoll_event out;
    while (epoll_wait(w->q[who], &out, 1, -1) != 1) {
    }
  }
}

static void *WakeupB(void *arg) {
  struct wakeup *w = arg;
  char c;
  for (;;) {
    WaitOn(w, 1);
    if (atomic_load(&w->stop)) return NULL;
    if (read(w->p[0].r, &c, 1) != 1) Die("read b");
    if (write(w->p[1].w, "y", 1) != 1) Die("write b");
  }
}

static void WakeupA(void *arg) {
  struct wakeup *w = arg;
  char c;
  if (write(w->p[0].w, "x", 1) != 1) Die("write a");
  WaitOn(w, 0);
  if (read(w->p[1].r, &c, 1) != 1) Die("read a");
}

static double Wakeup(int use_kq) {
  struct wakeup w;
  memset(&w, 0, sizeof w);
  w.use_kq = use_kq;
  struct pipe_pair *p = NewPipes(2, 0);
  w.p[0] = p[0];
  w.p[1] = p[1];
  /* Blocking reads would hide a spurious wake-up; non-blocking ones fail. */
  for (int i = 0; i < 2; i++) {
    int fd = i == 0 ? w.p[1].r : w.p[0].r;
    if (use_kq) {
      w.q[i] = NewKq();
      KqChange(w.q[i], fd, EV_ADD);
    } else {
      w.q[i] = epoll_create1(EPOLL_CLOEXEC);
      struct epoll_event ee;
      memset(&ee, 0, sizeof ee);
      ee.events = EPOLLIN;
      if (epoll_ctl(w.q[i], EPOLL_CTL_ADD, fd, &ee) != 0) Die("epoll_ctl");
    }
  }
  pthread_t b;
  if (pthread_create(&b, NULL, WakeupB, &w) != 0) Die("pthread_create");
  double ns = BestNs(WakeupA, &w);
  atomic_store(&w.stop, 1);
  if (write(w.p[0].w, "z", 1) != 1) Die("write stop");
  pthread_join(b, NULL);
  close(w.q[0]);
  close(w.q[1]);
  ClosePipes(p, 2);
  return ns;
}

/* ---- EV_ADD + EV_DELETE, one change per call ------------------------------ */

struct adddel {
  int q;
  struct pipe_pair *p;
  int n;
  long i;
};

static void EpollAddDel(void *arg) {
  struct adddel *a = arg;
  int fd = a->p[a->i++ % a->n].r;
  struct epoll_event ee;
  memset(&ee, 0, sizeof ee);
  ee.events = EPOLLIN;
  if (epoll_ctl(a->q, EPOLL_CTL_ADD, fd, &ee) != 0) Die("epoll_ctl add");
  if (epoll_ctl(a->q, EPOLL_CTL_DEL, fd, &ee) != 0) Die("epoll_ctl del");
}

static void KqAddDel(void *arg) {
  struct adddel *a = arg;
  int fd = a->p[a->i++ % a->n].r;
  KqChange(a->q, fd, EV_ADD);
  KqChange(a->q, fd, EV_DELETE);
}

static void AddDelete(int npipes, double *epoll_ns, double *kq_ns) {
  struct pipe_pair *p = NewPipes(npipes, 0);
  struct adddel a = {epoll_create1(EPOLL_CLOEXEC), p, npipes, 0};
  *epoll_ns = BestNs(EpollAddDel, &a);
  close(a.q);
  a.q = NewKq();
  *kq_ns = BestNs(KqAddDel, &a);
  close(a.q);
  ClosePipes(p, npipes);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      g_quick = 1;
    } else {
      fprintf(stderr, "usage: peer_bench [--quick]\n");
      return 2;
    }
  }
  /* 1000 ready pipes and 2000 for add/delete need descriptors. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  double e, k;
  Harvest(1, 1, &e, &k);
  printf("harvest 1 ready pipe\tus/call\t%.3f\t%.3f\n", e / 1e3, k / 1e3);
  Harvest(1000, 256, &e, &k);
  printf("batch 1000 ready, 256/call\tM events/s\t%.3f\t%.3f\n", 256e3 / e, 256e3 / k);
  e = Wakeup(0);
  k = Wakeup(1);
  printf("wake-up round trip\tus\t%.3f\t%.3f\n", e / 1e3, k / 1e3);
  AddDelete(2000, &e, &k);
  printf("EV_ADD+EV_DELETE\tk pairs/s\t%.1f\t%.1f\n", 1e6 / e, 1e6 / k);
  return 0;
}
