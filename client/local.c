/*
 * The fast path of kevent(): knotes this process collects itself (ABI 4,
 * proto/kqueue_abi.h "Knotes the owner collects itself"; local.h).
 *
 * State per kqueue made by kqueue() here (struct LocalQueue, found by the
 * queue's descriptor number): an epoll instance attached to the queue, and
 * per descriptor number of a pipe or FIFO that appeared in a READ/WRITE
 * change what the daemon holds for it (struct LocalFd): the file's
 * identity, and per filter whether a knote exists, its flags as the daemon
 * reports them, whether it is disabled and whether it is LOCAL (the daemon
 * leaves it to us). The invariant every rule below keeps: each knote the
 * daemon treats as local is in our table and in our epoll instance. When
 * the library cannot tell what the daemon did (a kevent ioctl that failed
 * while it carried changes, an answer it cannot attribute, an epoll item
 * it cannot remove) the queue goes to the ordinary path for good: correct,
 * only slower.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* secure_getenv, F_GETPIPE_SZ */
#endif

#include "client/local.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* What the daemon reports for a pipe's WRITE when no NOTE_LOWAT is set: an
 * atomic write must fit (kPipeWriteLowat in daemon/filters/fd/). */
#define KQD_PIPE_WRITE_LOWAT PIPE_BUF

/* epoll data of the item watching the daemon's process (a pidfd): never an
 * entry's (ItemData's low half is at most INT_MAX + 1). */
#define KQD_DAEMON_GONE_TAG UINT64_MAX

/* Reports read from the epoll instance per epoll_wait: on the stack up to
 * KQD_STACK_REPORTS, allocated up to KQD_MAX_REPORTS (one epoll_wait, so
 * no report comes twice in a call). */
#define KQD_STACK_REPORTS 64
#define KQD_MAX_REPORTS 4096

/* Changes copied on the stack up to this many (2.5 KB); more are allocated. */
#define KQD_STACK_CHANGES 64

/* What the library knows of one (descriptor, filter) knote of the queue. */
enum KnoteState {
  KN_ABSENT = 0, /* the daemon holds none (as far as our changes tell) */
  KN_PRESENT,    /* it holds one: flags/disabled/local below are right */
  KN_UNKNOWN,    /* a change of ours failed in a way we cannot read: never local */
};

struct LocalKnote {
  uint8_t state;   /* enum KnoteState */
  uint8_t local;   /* the daemon leaves it to us (KN_PRESENT only) */
  uint8_t disabled;
  uint32_t flags;  /* the daemon's kev.flags for it, without EV_EOF */
  uint64_t udata;
};

/* One descriptor number of a pipe or FIFO that READ/WRITE changes named. */
struct LocalFd {
  uint32_t gen;      /* 0: slot unused; else in this entry's epoll data */
  dev_t dev;         /* identity of the file when the entry was made */
  ino_t ino;
  int accmode;       /* O_RDONLY / O_WRONLY / O_RDWR */
  uint32_t events;   /* registered in the epoll instance (0: no item) */
  int watched;       /* the file has an item in the queue's idep */
  struct LocalKnote kn[2]; /* by filter: EVFILT_READ, EVFILT_WRITE */
};

/* One queue with a fast path. */
struct LocalQueue {
  /* Guards everything below it. Never held across a blocking epoll_wait
   * or any syscall on a client's file or the kqueue. */
  pthread_mutex_t mu;
  int kq;           /* the descriptor (fixed) */
  int ep;           /* the epoll instance (fixed; closed with the struct) */
  int idep;         /* an epoll instance never waited on: one item per entry,
                     * by which kcmp tells its open file (fixed; closed with
                     * the struct) */
  int daemon_pidfd; /* the daemon's process, in ep (fixed; closed with it) */
  pid_t pid;        /* this process, for kcmp (fixed; a child never uses q) */
  dev_t kq_dev;     /* the queue's descriptor's identity at kqueue() (fixed) */
  ino_t kq_ino;
  int ioctl_only;   /* the ordinary path for good */
  uint32_t next_gen;
  struct LocalFd *fds; /* indexed by descriptor number */
  size_t nfds;
  int refs;         /* guarded by g_mu: the registry's and each caller's */
};

/* The registry: queues by descriptor number. g_mu guards g_queues,
 * g_nqueues and every LocalQueue.refs. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct LocalQueue **g_queues;
static size_t g_nqueues;
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

/* ---- registry ----------------------------------------------------------- */

static void FreeQueue(struct LocalQueue *q) {
  int saved = errno;
  close(q->ep);
  close(q->idep);
  close(q->daemon_pidfd);
  pthread_mutex_destroy(&q->mu);
  free(q->fds);
  free(q);
  errno = saved;
}

/* Drops one reference (g_mu held); returns the queue to free, if any. */
static struct LocalQueue *UnrefLocked(struct LocalQueue *q) {
  return --q->refs == 0 ? q : NULL;
}

static struct LocalQueue *Acquire(int kq) {
  struct LocalQueue *q = NULL;
  if (kq < 0) return NULL;
  pthread_mutex_lock(&g_mu);
  if ((size_t)kq < g_nqueues && g_queues[kq] != NULL) {
    q = g_queues[kq];
    q->refs++;
  }
  pthread_mutex_unlock(&g_mu);
  return q;
}

/* Whether q is still the queue its descriptor number names: not forgotten
 * or replaced (kqueue() gave the number to a new queue), and the number
 * still names the device (`st`: what fstat says of it now). */
static int StillOurs(struct LocalQueue *q, const struct stat *st) {
  pthread_mutex_lock(&g_mu);
  int ours = (size_t)q->kq < g_nqueues && g_queues[q->kq] == q;
  pthread_mutex_unlock(&g_mu);
  return ours && st->st_dev == q->kq_dev && st->st_ino == q->kq_ino;
}

/* Forgets q if its descriptor number still names it in the registry (not
 * if kqueue() has given the number to a new queue meanwhile). */
static void ForgetQueue(struct LocalQueue *q) {
  struct LocalQueue *dead = NULL;
  pthread_mutex_lock(&g_mu);
  if ((size_t)q->kq < g_nqueues && g_queues[q->kq] == q) {
    dead = UnrefLocked(q);
    g_queues[q->kq] = NULL;
  }
  pthread_mutex_unlock(&g_mu);
  if (dead != NULL) FreeQueue(dead);
}

static void Release(struct LocalQueue *q) {
  pthread_mutex_lock(&g_mu);
  struct LocalQueue *dead = UnrefLocked(q);
  pthread_mutex_unlock(&g_mu);
  if (dead != NULL) FreeQueue(dead);
}

void kqd_local_forget(int kq) {
  if (kq < 0) return;
  struct LocalQueue *dead = NULL;
  pthread_mutex_lock(&g_mu);
  if ((size_t)kq < g_nqueues && g_queues[kq] != NULL) {
    dead = UnrefLocked(g_queues[kq]);
    g_queues[kq] = NULL;
  }
  pthread_mutex_unlock(&g_mu);
  if (dead != NULL) FreeQueue(dead);
}

/* fork(): the child keeps the parent's descriptors but is not the queues'
 * local owner (the daemon ignores a non-owner's SKIP): every queue goes to
 * the ordinary path there. The registry is emptied (its entries, whose
 * mutexes another thread of the parent may have held at the fork, are
 * left as they are) and the epoll instances are closed. */
static void AtforkPrepare(void) { pthread_mutex_lock(&g_mu); }
static void AtforkParent(void) { pthread_mutex_unlock(&g_mu); }
static void AtforkChild(void) {
  for (size_t i = 0; i < g_nqueues; i++) {
    if (g_queues[i] != NULL) {
      close(g_queues[i]->ep);
      close(g_queues[i]->idep);
      close(g_queues[i]->daemon_pidfd);
      g_queues[i] = NULL;
    }
  }
  pthread_mutex_init(&g_mu, NULL);
}
static void InstallAtfork(void) { pthread_atfork(AtforkPrepare, AtforkParent, AtforkChild); }

static int LocalSwitchedOff(void) {
  const char *value = secure_getenv("KQUEUE_LOCAL");
  return value != NULL && strcmp(value, "0") == 0;
}

/*
 * A pidfd of the daemon serving kq, added to ep: the daemon's own item
 * vanishes with the daemon (its eventfd closes), and a call parked in
 * epoll_wait must still learn that the daemon is gone (ENOTCONN, as on the
 * ordinary path). The daemon's pid comes from KQ_IOC_STAT (this process's
 * queues only, so the report is small). -1 if it cannot be had.
 */
static int WatchDaemon(int kq, int ep) {
  struct kq_stat_args args;
  void *buf = NULL;
  int pidfd = -1;
  /* First the size, then the report (retried if it grew meanwhile). */
  uint64_t size = 0;
  for (int attempt = 0; attempt < 4; attempt++) {
    memset(&args, 0, sizeof args);
    args.pid = getpid();
    args.buf = (uint64_t)(uintptr_t)buf;
    args.buf_size = size;
    int rc = ioctl(kq, KQ_IOC_STAT, &args);
    if (rc < 0) goto out;
    if (rc > 0 && (size_t)rc >= sizeof(struct kq_stat_header)) {
      const struct kq_stat_header *head = buf;
      if (head->daemon_pid <= 0) goto out;
      pidfd = (int)syscall(SYS_pidfd_open, (pid_t)head->daemon_pid, 0);
      break;
    }
    size = args.needed + 4096;
    free(buf);
    buf = malloc(size);
    if (buf == NULL) goto out;
  }
  if (pidfd >= 0) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = KQD_DAEMON_GONE_TAG;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
      close(pidfd);
      pidfd = -1;
    }
  }
out:
  free(buf);
  return pidfd;
}

void kqd_local_open(int kq) {
  int saved = errno;
  if (kq < 0 || LocalSwitchedOff()) goto out;
  pthread_once(&g_atfork_once, InstallAtfork);
  struct stat st;
  if (fstat(kq, &st) != 0) goto out;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) goto out;
  int idep = epoll_create1(EPOLL_CLOEXEC);
  if (idep < 0) {
    close(ep);
    goto out;
  }
  /* Without a watch on the daemon, a parked call would miss its death. */
  int pidfd = WatchDaemon(kq, ep);
  if (pidfd < 0) {
    close(idep);
    close(ep);
    goto out;
  }
  struct kq_local_attach attach;
  memset(&attach, 0, sizeof attach);
  attach.epoll_fd = ep;
  attach.tag = 0; /* 0 is the daemon's item; ours are never 0 */
  int rc;
  do {
    rc = ioctl(kq, KQ_IOC_LOCAL_ATTACH, &attach);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) { /* ENOTTY (older daemon), EBUSY, EMFILE...: no fast path */
    close(pidfd);
    close(idep);
    close(ep);
    goto out;
  }
  struct LocalQueue *q = calloc(1, sizeof *q);
  if (q == NULL) {
    close(pidfd);
    close(idep);
    close(ep);
    goto out;
  }
  q->daemon_pidfd = pidfd;
  pthread_mutex_init(&q->mu, NULL);
  q->kq = kq;
  q->ep = ep;
  q->idep = idep;
  q->pid = getpid();
  q->kq_dev = st.st_dev;
  q->kq_ino = st.st_ino;
  q->next_gen = 1;
  q->refs = 1;
  struct LocalQueue *dead = NULL;
  pthread_mutex_lock(&g_mu);
  if ((size_t)kq >= g_nqueues) {
    size_t n = g_nqueues == 0 ? 64 : g_nqueues;
    while (n <= (size_t)kq) n *= 2;
    struct LocalQueue **grown = realloc(g_queues, n * sizeof *grown);
    if (grown == NULL) {
      pthread_mutex_unlock(&g_mu);
      FreeQueue(q);
      goto out;
    }
    memset(grown + g_nqueues, 0, (n - g_nqueues) * sizeof *grown);
    g_queues = grown;
    g_nqueues = n;
  }
  if (g_queues[kq] != NULL) dead = UnrefLocked(g_queues[kq]);
  g_queues[kq] = q;
  pthread_mutex_unlock(&g_mu);
  if (dead != NULL) FreeQueue(dead);
out:
  errno = saved;
}

/* ---- the table ------------------------------------------------------------ */

static uint64_t ItemData(int fd, uint32_t gen) {
  return ((uint64_t)gen << 32) | (uint32_t)(fd + 1); /* never 0 */
}

/* The entry of fd, or NULL (mu held). */
static struct LocalFd *FindFd(struct LocalQueue *q, int fd) {
  if (fd < 0 || (size_t)fd >= q->nfds || q->fds[fd].gen == 0) return NULL;
  return &q->fds[fd];
}

/* A fresh entry for fd (mu held): the previous one, if any, is dropped
 * (its epoll item, if the file still exists elsewhere, reports a stale
 * generation from now on). NULL when out of memory. */
static struct LocalFd *NewFd(struct LocalQueue *q, int fd, const struct stat *st, int accmode) {
  if ((size_t)fd >= q->nfds) {
    size_t n = q->nfds == 0 ? 64 : q->nfds;
    while (n <= (size_t)fd) n *= 2;
    struct LocalFd *grown = realloc(q->fds, n * sizeof *grown);
    if (grown == NULL) return NULL;
    memset(grown + q->nfds, 0, (n - q->nfds) * sizeof *grown);
    q->fds = grown;
    q->nfds = n;
  }
  struct LocalFd *e = &q->fds[fd];
  memset(e, 0, sizeof *e);
  if (q->next_gen == 0) q->next_gen = 1;
  e->gen = q->next_gen++;
  e->dev = st->st_dev;
  e->ino = st->st_ino;
  e->accmode = accmode;
  /* The file's item in idep (no events; never waited on), to know it
   * again: SameOpenFile. An item left by an earlier entry of this very
   * file will do. It goes when the file goes. */
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  e->watched = epoll_ctl(q->idep, EPOLL_CTL_ADD, fd, &ev) == 0 || errno == EEXIST;
  return e;
}

/* Brings fd's epoll item to `want` events (mu held). 0 or an errno. */
static int SyncItem(struct LocalQueue *q, int fd, struct LocalFd *e, uint32_t want) {
  if (want == e->events) return 0;
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = want;
  ev.data.u64 = ItemData(fd, e->gen);
  int rc;
  if (want == 0) {
    rc = epoll_ctl(q->ep, EPOLL_CTL_DEL, fd, &ev);
  } else if (e->events == 0) {
    rc = epoll_ctl(q->ep, EPOLL_CTL_ADD, fd, &ev);
    if (rc != 0 && errno == EEXIST) rc = epoll_ctl(q->ep, EPOLL_CTL_MOD, fd, &ev);
  } else {
    rc = epoll_ctl(q->ep, EPOLL_CTL_MOD, fd, &ev);
  }
  if (rc != 0) return errno;
  e->events = want;
  return 0;
}

/* Whether fd names an open file that has an item in q->idep (one kcmp
 * per item of the number): the file of fd's entry, made when the entry was.
 * A FIFO opened anew at the number has the inode and access mode of the old
 * one, but is another file to the daemon (it compares open files): its
 * knotes are new ones, and the old file's epoll item went with that file.
 * 0 too when kcmp cannot tell: then the entry is made anew, which at worst
 * sends the queue to the ordinary path (a report of the old item, if that
 * file lives on elsewhere). */
static int SameOpenFile(const struct LocalQueue *q, int fd) {
  /* Several items of the number when files it named before live on. */
  for (uint32_t toff = 0; toff < 4; toff++) {
    struct kcmp_epoll_slot slot;
    memset(&slot, 0, sizeof slot);
    slot.efd = (uint32_t)q->idep;
    slot.tfd = (uint32_t)fd;
    slot.toff = toff;
    const long r = syscall(SYS_kcmp, q->pid, q->pid, KCMP_EPOLL_TFD, fd, &slot);
    if (r == 0) return 1;
    if (r < 0) return 0; /* no more items (ENOENT), or no kcmp */
  }
  return 0;
}

static uint32_t WantedEvents(const struct LocalFd *e) {
  uint32_t want = 0;
  if (e->kn[EVFILT_READ].state == KN_PRESENT && e->kn[EVFILT_READ].local) want |= EPOLLIN;
  if (e->kn[EVFILT_WRITE].state == KN_PRESENT && e->kn[EVFILT_WRITE].local) want |= EPOLLOUT;
  return want;
}

/* ---- changes ---------------------------------------------------------- */

/* What a change of the call means for the table, decided before the call
 * and applied after it according to its outcome. */
struct ChangePlan {
  int fd;                   /* -1: not a knote the table follows */
  uint32_t gen;             /* the entry it was planned on */
  uint32_t filter;
  int marked;               /* sent with KQ_CHANGE_LOCAL */
  struct LocalKnote after;  /* the knote if the change succeeds */
};

/* The first change of each followed (fd, filter) in a call carries the
 * state before the call; `dup` says the key appears again later in it. */
struct KeySnapshot {
  struct LocalKnote before;
  int dup;
};

static int SameKey(const struct ChangePlan *a, const struct ChangePlan *b) {
  return a->fd == b->fd && a->gen == b->gen && a->filter == b->filter;
}

static int FilterEligibleFor(uint32_t filter, int accmode) {
  return filter == EVFILT_READ ? accmode != O_WRONLY : accmode != O_RDONLY;
}

/* The knote after the change `kev` (`flags`: its flags without
 * EV_SYSFLAGS) applied to `now`, as the daemon applies it; not local. */
static struct LocalKnote NextKnote(const struct LocalKnote *now, const struct kq_kevent *kev,
                                   uint32_t flags) {
  struct LocalKnote after = *now;
  after.local = 0;
  if (flags & EV_ADD) {
    if (now->state == KN_PRESENT) {
      if (flags & EV_ENABLE) after.disabled = 0;
    } else if (now->state == KN_ABSENT) {
      after.state = KN_PRESENT;
      after.flags = flags & ~EV_EOF; /* the daemon keeps the first EV_ADD's */
      after.disabled = 0;
    }
    if (flags & EV_DISABLE) after.disabled = 1;
    after.udata = kev->udata;
  } else if (flags & EV_DELETE) {
    memset(&after, 0, sizeof after);
  } else {
    /* EV_ENABLE, EV_DISABLE, a bare update: the knote is not local after
     * it (whatever else the change did). */
    if (flags & EV_DISABLE) after.disabled = 1;
    if (flags & EV_ENABLE) after.disabled = 0;
  }
  return after;
}

/* Whether the daemon makes the knote local when `kev`, sent with
 * KQ_CHANGE_LOCAL, took it from `now` to `after` (NextKnote) on a file
 * opened with `accmode`: an EV_ADD leaving it enabled and level-triggered,
 * with no NOTE_LOWAT. */
static int LocalAfter(const struct LocalKnote *now, const struct LocalKnote *after,
                      const struct kq_kevent *kev, uint32_t flags, uint32_t filter,
                      int accmode) {
  return (flags & EV_ADD) && now->state != KN_UNKNOWN && kev->fflags == 0 &&
         !(flags & (EV_CLEAR | EV_ONESHOT | EV_DISPATCH | EV_DISABLE)) &&
         !(after->flags & (EV_CLEAR | EV_ONESHOT | EV_DISPATCH)) && !after->disabled &&
         FilterEligibleFor(filter, accmode);
}

/*
 * Before the call (mu held): copies the changes to `out` with `reserved`
 * cleared, marks the eligible ones KQ_CHANGE_LOCAL (their epoll item is
 * added first; if that fails, the change goes unmarked) and plans each
 * one's effect on the table. Follows the daemon's order: a change sees the
 * table as the earlier changes of the call left it (if they succeed).
 */
static void PlanChanges(struct LocalQueue *q, const struct kevent *changes, size_t n,
                        struct kevent *out, struct ChangePlan *plan) {
  for (size_t i = 0; i < n; i++) {
    out[i] = changes[i];
    struct kq_kevent *kev = (struct kq_kevent *)&out[i];
    kev->reserved = 0;
    struct ChangePlan *p = &plan[i];
    memset(p, 0, sizeof *p);
    p->fd = -1;
    const uint32_t filter = kev->filter;
    const uint32_t flags = kev->flags & ~EV_SYSFLAGS;
    if ((filter != EVFILT_READ && filter != EVFILT_WRITE) || kev->ident > INT_MAX) continue;
    const int fd = (int)kev->ident;
    struct LocalFd *e = FindFd(q, fd);
    struct stat st;
    int accmode = -1;
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
      /* The access mode of the entry's file when the inode is the same
       * (one fcntl less per change of a followed pipe). */
      accmode = e != NULL && e->dev == st.st_dev && e->ino == st.st_ino ? e->accmode
                                                                          : fcntl(fd, F_GETFL);
    }
    if (accmode >= 0) accmode &= O_ACCMODE;
    const int fifo = accmode >= 0;
    if (e != NULL && (!fifo || e->dev != st.st_dev || e->ino != st.st_ino ||
                      e->accmode != accmode ||
                      (e->watched && !SameOpenFile(q, fd)))) {
      /* The number names another file now: the daemon drops the old
       * knotes of it at this change (BSD removes knotes on close). */
      e->gen = 0;
      e = NULL;
    }
    if (!fifo) continue; /* never local: nothing to follow */
    if (e == NULL) e = NewFd(q, fd, &st, accmode);
    if (e == NULL) continue;
    struct LocalKnote *k = &e->kn[filter];
    p->fd = fd;
    p->gen = e->gen;
    p->filter = filter;
    /* Plans are applied in order after the call; `after` starts from what
     * the earlier changes of this call predict. */
    struct LocalKnote now = *k;
    for (size_t j = i; j-- > 0;) {
      if (SameKey(&plan[j], p)) {
        now = plan[j].after;
        break;
      }
    }
    struct LocalKnote after = NextKnote(&now, kev, flags);
    if (LocalAfter(&now, &after, kev, flags, filter, accmode)) {
      const uint32_t bit = filter == EVFILT_READ ? EPOLLIN : EPOLLOUT;
      if (SyncItem(q, fd, e, e->events | bit) == 0) {
        kev->reserved = KQ_CHANGE_LOCAL;
        p->marked = 1;
        after.local = 1;
      }
    }
    p->after = after;
  }
}

/* Whether `answer` (an EV_ERROR record) is the daemon's answer to `change`. */
static int AnswerFor(const struct kq_kevent *answer, const struct kq_kevent *change) {
  /* Data 0 is a receipt: never the answer of a change without EV_RECEIPT
   * (an error's data is its errno, never 0). */
  return answer->ident == change->ident && answer->filter == change->filter &&
         answer->fflags == change->fflags && answer->udata == change->udata &&
         (answer->data != 0 || (change->flags & EV_RECEIPT));
}

/* Whether a failed kevent call with a single change failed with that
 * change's error (as BSD's kevent returns it when there is no room for an
 * EV_ERROR answer), so that the change surely did not apply. */
static int ChangeError(int err) { return err == ENOENT || err == EBADF || err == EINVAL; }

/*
 * After the call (mu held): applies the plans of the changes the daemon
 * applied, in order, reading each change's outcome from the answers at the
 * head of `events` (rc of them when the call returned answers), and brings
 * the epoll items in line. (The daemon's answers carry `reserved` zero,
 * whatever the copy we sent had: nothing of ours shows in them.)
 * Whatever it cannot attribute sends the queue to the ordinary path.
 */
static void ApplyPlans(struct LocalQueue *q, const struct kevent *changes, size_t n,
                       const struct ChangePlan *plan, int rc, int call_errno,
                       struct kevent *events, size_t nevents) {
  int only_err = 0; /* the error of the call's only change */
  int followed = 0;  /* a change of a knote the table follows */
  for (size_t i = 0; i < n; i++) followed |= plan[i].fd >= 0;
  if (rc < 0 && !followed) return; /* whatever applied, the table holds */
  if (rc < 0) {
    /* With several changes, which applied is not known (the daemon stops
     * at the first failure it cannot report): the ordinary path from now
     * on. A single change's own error says it did not apply. */
    if (n != 1 || !ChangeError(call_errno)) {
      q->ioctl_only = 1;
      return;
    }
    only_err = call_errno;
  }
  const size_t nanswers =
      (rc > 0 && (((struct kq_kevent *)events)[0].flags & EV_ERROR)) ? (size_t)rc : 0;
  size_t a = 0;           /* next answer */
  size_t room = nevents;  /* the daemon's room for answers */
  int stopped = 0;        /* changes from here on were not applied */
  for (size_t i = 0; i < n; i++) {
    const struct ChangePlan *p = &plan[i];
    const struct kq_kevent *change = (const struct kq_kevent *)&changes[i];
    int applied = !stopped;
    int err = 0;
    if (applied && only_err != 0) {
      err = only_err;
    } else if (applied) {
      if (a < nanswers && AnswerFor((const struct kq_kevent *)&events[a], change)) {
        const struct kq_kevent *answer = (const struct kq_kevent *)&events[a];
        err = (int)answer->data;
        a++;
        room--;
        if (err == 0 && !(change->flags & EV_RECEIPT)) {
          q->ioctl_only = 1; /* a success answered without a receipt */
          return;
        }
      } else if (change->flags & EV_RECEIPT) {
        if (room != 0) {
          q->ioctl_only = 1; /* a receipt that did not come back */
          return;
        }
        stopped = 1; /* no room for its receipt: applied, and the last */
      }
    }
    if (p->fd < 0) continue;
    struct LocalFd *e = FindFd(q, p->fd);
    if (e == NULL || e->gen != p->gen) {
      q->ioctl_only = 1; /* replaced meanwhile by another thread's change */
      return;
    }
    struct LocalKnote *k = &e->kn[p->filter];
    if (!applied) continue;
    const uint32_t flags = change->flags & ~EV_SYSFLAGS;
    if (err == 0) {
      /* From the knote as the changes before it in the call really left it
       * (the plan assumed they all applied): the daemon decides on that
       * knote whether the mark makes it local. */
      struct LocalKnote next = NextKnote(k, change, flags);
      next.local = p->marked && LocalAfter(k, &next, change, flags, p->filter, e->accmode);
      *k = next;
      continue;
    }
    /* A failed change of a knote that was local leaves the daemon's state
     * unreadable; so does an error that a later change of the same knote
     * would have answered alike (which of the two failed is unknown),
     * unless this one could not but fail (a change of a knote there is
     * none of, that is no EV_ADD). */
    int twin = 0;
    for (size_t j = i + 1; j < n; j++) {
      const struct kq_kevent *later = (const struct kq_kevent *)&changes[j];
      twin |= SameKey(&plan[j], p) && later->fflags == change->fflags &&
              later->udata == change->udata;
    }
    const int sure = k->state == KN_ABSENT && !(flags & EV_ADD);
    if (k->local || (twin && !sure)) {
      q->ioctl_only = 1;
      return;
    }
    if (err == ENOENT || (flags & EV_DELETE) || k->state == KN_ABSENT) {
      memset(k, 0, sizeof *k); /* none there (a failed add made none) */
    } else {
      k->state = KN_UNKNOWN;
      k->local = 0;
    }
  }
  if (a != nanswers) {
    q->ioctl_only = 1; /* answers the library cannot place */
    return;
  }
  /* The epoll items now follow the table; an item that cannot be brought
   * in line would make us report a knote the daemon reports too. */
  for (size_t i = 0; i < n; i++) {
    if (plan[i].fd < 0) continue;
    struct LocalFd *e = FindFd(q, plan[i].fd);
    if (e == NULL || e->gen != plan[i].gen) continue;
    if (SyncItem(q, plan[i].fd, e, WantedEvents(e)) != 0) {
      q->ioctl_only = 1;
      return;
    }
  }
}

/* ---- collection ----------------------------------------------------------- */

/* One report's entry as it was when the report was read. */
struct ReportCopy {
  int fd;
  uint32_t revents;
  dev_t dev;
  ino_t ino;
  struct LocalKnote kn[2];
};

/* What one look at the epoll instance found. */
struct Harvest {
  int count;      /* events written */
  int daemon;     /* the daemon's item was among the reports */
  int ghost;      /* a report for a file we no longer follow */
  int reports;    /* reports of ours read */
};

static int64_t IoctlInt(int fd, unsigned long request) {
  int n = 0;
  if (ioctl(fd, request, &n) != 0) return -1;
  return n;
}

static void PutEvent(struct kevent *out, int fd, uint32_t filter, const struct LocalKnote *k,
                     int eof, int64_t data) {
  struct kq_kevent *ev = (struct kq_kevent *)out;
  memset(ev, 0, sizeof *ev);
  ev->ident = (uint64_t)fd;
  ev->filter = filter;
  ev->flags = k->flags | (eof ? EV_EOF : 0);
  ev->data = data;
  ev->udata = k->udata;
}

/*
 * Reads the epoll instance once (waiting at most `ms` milliseconds, -1 for
 * ever) and turns its reports into events at out[0, room), as the daemon's
 * fd filter (PipeRead/PipeWrite) would report them. A ghost (a report
 * whose file is not the one we registered) sends the queue to the ordinary
 * path and nothing it read is returned. -1 with errno if epoll_wait failed.
 */
static int HarvestInto(struct LocalQueue *q, struct kevent *out, size_t room,
                       const struct timespec *wait, struct Harvest *h,
                       struct epoll_event *reports, struct ReportCopy *copies, int max);

static int HarvestOnce(struct LocalQueue *q, struct kevent *out, size_t room,
                       const struct timespec *wait, struct Harvest *h) {
  memset(h, 0, sizeof *h);
  struct epoll_event stack_reports[KQD_STACK_REPORTS];
  struct ReportCopy stack_copies[KQD_STACK_REPORTS];
  struct epoll_event *reports = stack_reports;
  struct ReportCopy *copies = stack_copies;
  /* Two reports more than the room: the daemon's item (raised by a knote
   * of the daemon's, or by a close: see ToDaemon) and its pidfd are reports
   * that make no event, and must not take the place of one nor be missed
   * beside pipes that fill the room. (With more pipes ready than that the
   * item may come a call later: a raised item joins the end of epoll's
   * ready list.) */
  int max = room + 2 < KQD_MAX_REPORTS ? (int)room + 2 : KQD_MAX_REPORTS;
  if (max > KQD_STACK_REPORTS) {
    reports = malloc((size_t)max * sizeof *reports);
    copies = malloc((size_t)max * sizeof *copies);
    if (reports == NULL || copies == NULL) {
      free(reports);
      free(copies);
      reports = stack_reports;
      copies = stack_copies;
      max = KQD_STACK_REPORTS;
    }
  }
  int rc = HarvestInto(q, out, room, wait, h, reports, copies, max);
  if (reports != stack_reports) {
    int saved = errno;
    free(reports);
    free(copies);
    errno = saved;
  }
  return rc;
}

/* HarvestOnce with its buffers (`max` reports each). */
static int HarvestInto(struct LocalQueue *q, struct kevent *out, size_t room,
                       const struct timespec *wait, struct Harvest *h,
                       struct epoll_event *reports, struct ReportCopy *copies, int max) {
  int n = epoll_pwait2(q->ep, reports, max, wait, NULL);
  if (n < 0 && errno == ENOSYS) {
    int ms = -1;
    if (wait != NULL) {
      int64_t total = (int64_t)wait->tv_sec * 1000 + (wait->tv_nsec + 999999) / 1000000;
      ms = total > INT_MAX ? INT_MAX : (int)total;
    }
    n = epoll_wait(q->ep, reports, max, ms);
  }
  if (n < 0) return -1;
  int ncopies = 0;
  pthread_mutex_lock(&q->mu);
  for (int i = 0; i < n; i++) {
    const uint64_t data = reports[i].data.u64;
    if (data == 0 || data == KQD_DAEMON_GONE_TAG) {
      h->daemon = 1;
      continue;
    }
    h->reports++;
    const int fd = (int)(uint32_t)data - 1;
    const uint32_t gen = (uint32_t)(data >> 32);
    struct LocalFd *e = FindFd(q, fd);
    if (e == NULL || e->gen != gen) {
      /* An item of an entry since replaced, whose file lives on elsewhere:
       * it cannot be removed (its number names another file now). */
      h->ghost = 1;
      continue;
    }
    struct ReportCopy *c = &copies[ncopies++];
    c->fd = fd;
    c->revents = reports[i].events;
    c->dev = e->dev;
    c->ino = e->ino;
    c->kn[0] = e->kn[0];
    c->kn[1] = e->kn[1];
  }
  if (h->ghost) q->ioctl_only = 1;
  pthread_mutex_unlock(&q->mu);
  if (h->ghost) return 0;
  size_t count = 0;
  for (int i = 0; i < ncopies && count < room; i++) {
    const struct ReportCopy *c = &copies[i];
    struct stat st;
    if (fstat(c->fd, &st) != 0 || st.st_dev != c->dev || st.st_ino != c->ino) {
      /* Closed, or the number reused, while the file lives on elsewhere
       * (a child holds it): our item for it cannot be removed. */
      h->ghost = 1;
      pthread_mutex_lock(&q->mu);
      q->ioctl_only = 1;
      pthread_mutex_unlock(&q->mu);
      return 0;
    }
    const struct LocalKnote *r = &c->kn[EVFILT_READ];
    if (r->state == KN_PRESENT && r->local && !r->disabled &&
        (c->revents & (EPOLLIN | EPOLLHUP))) {
      const int64_t bytes = (c->revents & EPOLLIN) ? IoctlInt(c->fd, FIONREAD) : 0;
      const int64_t data = bytes > 0 ? bytes : 0;
      const int eof = (c->revents & EPOLLHUP) != 0;
      if (eof || data > 0) PutEvent(&out[count++], c->fd, EVFILT_READ, r, eof, data);
    }
    const struct LocalKnote *w = &c->kn[EVFILT_WRITE];
    if (count < room && w->state == KN_PRESENT && w->local && !w->disabled) {
      if (c->revents & EPOLLERR) {
        PutEvent(&out[count++], c->fd, EVFILT_WRITE, w, 1, 0);
      } else if (c->revents & EPOLLOUT) {
        const int64_t size = fcntl(c->fd, F_GETPIPE_SZ);
        const int64_t used = IoctlInt(c->fd, FIONREAD);
        int64_t data = size - (used > 0 ? used : 0);
        if (data < 0) data = 0;
        if (data > 0 && data >= KQD_PIPE_WRITE_LOWAT)
          PutEvent(&out[count++], c->fd, EVFILT_WRITE, w, 0, data);
      }
    }
  }
  h->count = (int)count;
  return 0;
}

/* ---- time ------------------------------------------------------------- */

static int TimeoutValid(const struct timespec *t) {
  return t == NULL || (t->tv_sec >= 0 && t->tv_nsec >= 0 && t->tv_nsec < 1000000000);
}

/* deadline = now + t (t not NULL). */
static void DeadlineAfter(const struct timespec *t, struct timespec *deadline) {
  clock_gettime(CLOCK_MONOTONIC, deadline);
  deadline->tv_sec += t->tv_sec;
  deadline->tv_nsec += t->tv_nsec;
  if (deadline->tv_nsec >= 1000000000) {
    deadline->tv_sec++;
    deadline->tv_nsec -= 1000000000;
  }
}

/* What is left until deadline (zero once past). */
static void Remaining(const struct timespec *deadline, struct timespec *left) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  left->tv_sec = deadline->tv_sec - now.tv_sec;
  left->tv_nsec = deadline->tv_nsec - now.tv_nsec;
  if (left->tv_nsec < 0) {
    left->tv_sec--;
    left->tv_nsec += 1000000000;
  }
  if (left->tv_sec < 0) left->tv_sec = left->tv_nsec = 0;
}

/* ---- the call ---------------------------------------------------------- */

/* An ordinary call: no changes, every knote the daemon's (no SKIP). */
static int AskDaemon(int kq, struct kevent *events, size_t nevents,
                     const struct timespec *timeout) {
  return kqd_daemon_kevent(kq, NULL, 0, events, nevents, timeout, KQ_KEVENT_LOCAL_CHANGES);
}

/*
 * The daemon's item (or a ghost) sends the rest of a call to the daemon.
 * The item is also how a close reaches us: the daemon raises it when this
 * process closes a descriptor of the queue (before close() returns) and
 * keeps it raised once the queue is released. So before asking, the one
 * check that the queue's descriptor still names the queue (a syscall the
 * calls answered here never pay): if not, the queue is forgotten, and the
 * call fails with EBADF as the ordinary path's parked calls do — or, when
 * nothing of it has been done yet (`untouched`: no changes applied) and
 * the number names another file now, the call takes the ordinary path
 * (KQD_NOT_LOCAL), which answers for whatever the number names.
 * `deadline`: NULL to wait for ever.
 */
static int ToDaemon(struct LocalQueue *q, struct kevent *events, size_t nevents,
                    const struct timespec *deadline, int untouched) {
  struct stat st;
  const int looked = fstat(q->kq, &st);
  if (looked != 0 && errno == EBADF) {
    ForgetQueue(q);
    errno = EBADF;
    return -1;
  }
  /* (fstat failing otherwise — ENOTCONN from a FUSE file whose daemon is
   * gone — leaves the answer to the ioctl.) */
  if (looked == 0 && !StillOurs(q, &st)) {
    ForgetQueue(q);
    if (untouched) return KQD_NOT_LOCAL;
    errno = EBADF;
    return -1;
  }
  struct timespec left;
  if (deadline != NULL) Remaining(deadline, &left);
  int rc = AskDaemon(q->kq, events, nevents, deadline != NULL ? &left : NULL);
  /* Closed (or the number reused by a file that is no kqueue) between the
   * look and the call: the kernel or the file said so. */
  if (rc < 0 && (errno == EBADF || errno == ENOTTY)) {
    int saved = errno;
    ForgetQueue(q);
    errno = saved;
  }
  return rc;
}

/*
 * Collects local events into events[0, nevents) after the daemon answered
 * `have` events (a SKIP call, or nothing yet), waiting as `timeout` says
 * (when have == 0). Steps 1 and 2 of the design (client/README.md). With
 * `daemon_first` (a call without changes) the daemon's item in the first
 * look sends the whole call to the daemon, local events or not: a queue
 * whose pipes are always ready must not starve the daemon's knotes.
 */
static int CollectLocal(struct LocalQueue *q, int have, struct kevent *events, size_t nevents,
                        const struct timespec *timeout, int daemon_first) {
  static const struct timespec kZero = {0, 0};
  if (have > 0) {
    /* The daemon's events are taken: add whatever is ready here now. */
    struct Harvest h;
    if (HarvestOnce(q, events + have, nevents - (size_t)have, &kZero, &h) != 0) return have;
    if (h.ghost) return have; /* the ordinary path from now on */
    /* The SKIP call took every ready knote of the daemon's (it had room),
     * so the daemon's item says nothing the local ones must wait for. None
     * of them is among the daemon's events: a SKIP call returns no local
     * knote, and only this process's own changes name its fd knotes
     * (docs/abi.md), which the table follows — a knote of another process
     * sharing the queue on the same number is its own knote, reported
     * beside ours as on the ordinary path. Left for a later call, they
     * would never come while every call of an event loop carries a change
     * and the daemon has an event. */
    return have + h.count;
  }
  /* One epoll_wait for the whole timeout: a close of the queue by another
   * thread raises the daemon's item (see ToDaemon), which ends it. */
  const int untouched = daemon_first;
  const int poll = timeout != NULL && timeout->tv_sec == 0 && timeout->tv_nsec == 0;
  struct timespec deadline, left;
  if (timeout != NULL && !poll) DeadlineAfter(timeout, &deadline);
  const struct timespec *until = timeout != NULL && !poll ? &deadline : NULL;
  int idle_reports = 0;
  for (;;) {
    const struct timespec *wait = timeout;
    if (until != NULL) {
      Remaining(until, &left);
      wait = &left;
    }
    struct Harvest h;
    if (HarvestOnce(q, events, nevents, wait, &h) != 0) return -1; /* EINTR... */
    if (daemon_first && (h.ghost || h.daemon)) {
      return ToDaemon(q, events, nevents, poll ? &kZero : until, untouched);
    }
    daemon_first = 0;
    if (h.count > 0) return h.count;
    if (h.ghost || h.daemon || h.reports > 0) {
      /* The daemon has something (or the file we watched is a ghost), or
       * reports that were no event (drained meanwhile) came twice: the
       * rest of the wait is the daemon's. */
      if (h.ghost || h.daemon || ++idle_reports > 1) {
        return ToDaemon(q, events, nevents, poll ? &kZero : until, untouched);
      }
      continue;
    }
    return 0; /* nothing reported: the timeout passed */
  }
}

/* Whether any change names a READ or WRITE knote. */
static int NamesFdKnotes(const struct kevent *changes, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (changes[i].filter == EVFILT_READ || changes[i].filter == EVFILT_WRITE) return 1;
  return 0;
}

static int QueueKevent(struct LocalQueue *q, const struct kevent *changes, size_t nchanges,
                       struct kevent *events, size_t nevents, const struct timespec *timeout) {
  static const struct timespec kZero = {0, 0};
  const int kq = q->kq;
  if (nevents > INT_MAX) nevents = INT_MAX;
  const int bad_args = !TimeoutValid(timeout) || (changes == NULL && nchanges > 0) ||
                       (events == NULL && nevents > 0);
  if (nchanges == 0) {
    if (bad_args || nevents == 0) return AskDaemon(kq, events, nevents, timeout);
    /* Step 2: what is ready here (waiting if need be), unless the daemon
     * has knotes of its own. */
    return CollectLocal(q, 0, events, nevents, timeout, 1);
  }
  if (bad_args) {
    /* The daemon refuses the call; what it applied first is its business:
     * the ordinary path from now on. */
    pthread_mutex_lock(&q->mu);
    q->ioctl_only = 1;
    pthread_mutex_unlock(&q->mu);
    return KQD_NOT_LOCAL;
  }
  if (nevents == 0 && nchanges > 1 && NamesFdKnotes(changes, nchanges)) {
    /* No room for answers: the daemon stops at the first change that fails
     * (or wants a receipt) and the call fails with its error, leaving
     * unknown which changes applied. One change per call is the same
     * semantics, and each outcome is known. */
    for (size_t i = 0; i < nchanges; i++) {
      const int rc = QueueKevent(q, &changes[i], 1, NULL, 0, timeout);
      if (rc != 0 || (changes[i].flags & EV_RECEIPT)) return rc;
    }
    return 0;
  }
  /* Step 1: the changes (eligible ones marked), the daemon's own events. */
  uint64_t stack_copy[KQD_STACK_CHANGES * sizeof(struct kevent) / sizeof(uint64_t)];
  struct ChangePlan stack_plan[KQD_STACK_CHANGES];
  struct kevent *copy = (struct kevent *)stack_copy;
  struct ChangePlan *plan = stack_plan;
  if (nchanges > KQD_STACK_CHANGES) {
    copy = malloc(nchanges * sizeof *copy);
    plan = malloc(nchanges * sizeof *plan);
    if (copy == NULL || plan == NULL) {
      free(copy);
      free(plan);
      errno = ENOMEM;
      return -1;
    }
  }
  pthread_mutex_lock(&q->mu);
  PlanChanges(q, changes, nchanges, copy, plan);
  pthread_mutex_unlock(&q->mu);
  int rc = kqd_daemon_kevent(kq, copy, nchanges, events, nevents,
                             nevents == 0 ? timeout : &kZero,
                             KQ_KEVENT_LOCAL_CHANGES | KQ_KEVENT_SKIP_LOCAL);
  int saved = errno;
  pthread_mutex_lock(&q->mu);
  ApplyPlans(q, changes, nchanges, plan, rc, saved, events, nevents);
  pthread_mutex_unlock(&q->mu);
  if (copy != (struct kevent *)stack_copy) {
    free(copy);
    free(plan);
  }
  errno = saved;
  if (rc < 0 || nevents == 0 || (size_t)rc == nevents) return rc;
  /* Answers (EV_ERROR, EV_RECEIPT) come alone, as on the ordinary path. */
  if (rc > 0 && (((struct kq_kevent *)events)[0].flags & EV_ERROR)) return rc;
  return CollectLocal(q, rc, events, nevents, timeout, 0);
}

int kqd_local_kevent(int kq, const struct kevent *changes, size_t nchanges,
                     struct kevent *events, size_t nevents, const struct timespec *timeout) {
  struct LocalQueue *q = Acquire(kq);
  if (q == NULL) return KQD_NOT_LOCAL;
  int rc = KQD_NOT_LOCAL;
  int usable;
  pthread_mutex_lock(&q->mu);
  usable = !q->ioctl_only;
  pthread_mutex_unlock(&q->mu);
  if (usable) {
    /* A call with changes goes to the daemon anyway: first, is kq still
     * this queue's descriptor? (Closed, or reused by another file: then it
     * is not ours any more.) A call without changes learns of a close
     * through the daemon's item (ToDaemon). */
    struct stat st;
    if (nchanges == 0 ||
        (fstat(kq, &st) == 0 && st.st_dev == q->kq_dev && st.st_ino == q->kq_ino)) {
      rc = QueueKevent(q, changes, nchanges, events, nevents, timeout);
    } else {
      int saved = errno;
      Release(q);
      kqd_local_forget(kq);
      errno = saved;
      return KQD_NOT_LOCAL;
    }
  }
  int saved = errno;
  Release(q);
  errno = saved;
  return rc;
}
