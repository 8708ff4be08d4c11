/*
 * shared_queue — one kqueue, many worker processes.
 *
 *   shared_queue [--workers N] [--events M] [--mode user|pipe] [--dispatch]
 *
 * kqueued shares a kqueue with the children of fork(2) (BSD kernels do not):
 * every process that calls kevent() on the inherited descriptor takes events
 * from the same queue, and each event goes to one caller only. That makes a
 * kqueue a work queue for a pre-forked server.
 *
 * The supervisor registers M one-shot events (--mode user: EVFILT_USER
 * idents; --mode pipe: EVFILT_READ on M pipes), forks N workers that each
 * loop on kevent(), and only then fires the events. Each worker reports what
 * it got over a result pipe. When all M are in, the supervisor fires N stop
 * events, also one-shot: a worker exits on its first stop event, so each
 * worker gets exactly one. The summary says how often each event was
 * delivered:
 *   worker 0: 31 events
 *   ...
 *   events 100 delivered 100 duplicates 0 missing 0
 * Exit status 0 iff every event was delivered exactly once.
 *
 * --dispatch uses EV_DISPATCH|EV_CLEAR instead of EV_ONESHOT: the knote stays
 * but is disabled once retrieved, which gives the same exactly-once delivery.
 */
#include <sys/types.h>
#include <sys/event.h>
#include <sys/wait.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Work events are numbered 1..M, stop events STOP_BASE+0..N-1. */
#define STOP_BASE 1000000

enum mode { MODE_USER, MODE_PIPE };

/* What a worker writes per event: 8 bytes, so pipe writes are atomic. */
struct record {
  int32_t worker;
  int32_t event;
};

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: shared_queue [--workers N] [--events M] [--mode user|pipe] [--dispatch]\n");
  exit(2);
}

static void apply(int kq, struct kevent *changes, size_t n) {
  if (n > 0 && kevent(kq, changes, n, NULL, 0, NULL) < 0) die("kevent (changes)");
}

/* A worker: takes events until it gets a stop event. In pipe mode it also
 * drains the byte, though a one-shot knote would not fire again anyway. */
static void worker(int id, int kq, int results, enum mode mode) {
  for (;;) {
    struct kevent ev;
    int n = kevent(kq, NULL, 0, &ev, 1, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("worker kevent");
      _exit(1);
    }
    if (n == 0) continue;
    if (ev.flags & EV_ERROR) {
      fprintf(stderr, "worker %d: event error %s\n", id, strerror((int)ev.data));
      _exit(1);
    }
    int32_t event = (int32_t)(intptr_t)ev.udata;
    if (mode == MODE_PIPE) {
      char c;
      if (read((int)ev.ident, &c, 1) != 1) die("worker read");
    }
    if (event >= STOP_BASE) _exit(0);
    struct record r = {id, event};
    if (write(results, &r, sizeof r) != (ssize_t)sizeof r) die("worker write");
  }
}

int main(int argc, char **argv) {
  int nworkers = 4;
  int nevents = 100;
  enum mode mode = MODE_USER;
  uint32_t once = EV_ONESHOT;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
      nworkers = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) {
      nevents = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
      const char *m = argv[++i];
      if (strcmp(m, "user") == 0) {
        mode = MODE_USER;
      } else if (strcmp(m, "pipe") == 0) {
        mode = MODE_PIPE;
      } else {
        usage();
      }
    } else if (strcmp(argv[i], "--dispatch") == 0) {
      once = EV_DISPATCH | EV_CLEAR;
    } else {
      usage();
    }
  }
  if (nworkers <= 0 || nevents <= 0 || nevents >= STOP_BASE) usage();

  int kq = kqueue();
  if (kq < 0) die("kqueue");
  int results[2];
  if (pipe(results) < 0) die("pipe");

  /* Slots 0..M-1 are work, M..M+N-1 stop. In pipe mode each has a pipe. */
  const int total = nevents + nworkers;
  struct kevent *changes = calloc((size_t)total, sizeof *changes);
  int(*pipes)[2] = calloc((size_t)total, sizeof *pipes);
  int *count = calloc((size_t)nevents + 1, sizeof *count);
  int *per_worker = calloc((size_t)nworkers, sizeof *per_worker);
  pid_t *workers = calloc((size_t)nworkers, sizeof *workers);
  if (!changes || !pipes || !count || !per_worker || !workers) die("calloc");

  for (int s = 0; s < total; s++) {
    intptr_t tag = s < nevents ? s + 1 : STOP_BASE + (s - nevents);
    if (mode == MODE_USER) {
      EV_SET(&changes[s], tag, EVFILT_USER, EV_ADD | once, 0, 0, tag);
    } else {
      if (pipe(pipes[s]) < 0) die("pipe (raise the fd limit for many events)");
      EV_SET(&changes[s], pipes[s][0], EVFILT_READ, EV_ADD | once, 0, 0, tag);
    }
  }
  apply(kq, changes, (size_t)total);

  for (int w = 0; w < nworkers; w++) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      close(results[0]);
      worker(w, kq, results[1], mode);
    }
    workers[w] = pid;
  }
  close(results[1]); /* EOF on results once every worker is gone */

  /* Fire the work, now that every worker is waiting on the queue. */
  if (mode == MODE_USER) {
    for (int s = 0; s < nevents; s++)
      EV_SET(&changes[s], s + 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0);
    apply(kq, changes, (size_t)nevents);
  } else {
    for (int s = 0; s < nevents; s++)
      if (write(pipes[s][1], "x", 1) != 1) die("write");
  }

  /* Collect until all work is reported or nothing arrives for 10 s. */
  int received = 0;
  int eof = 0;
  while (received < nevents) {
    struct pollfd p = {results[0], POLLIN, 0};
    int r = poll(&p, 1, 10000);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    struct record rec;
    ssize_t n = read(results[0], &rec, sizeof rec);
    if (n == 0) {
      eof = 1;
      break;
    }
    if (n != (ssize_t)sizeof rec) die("read results");
    if (rec.event >= 1 && rec.event <= nevents) count[rec.event]++;
    if (rec.worker >= 0 && rec.worker < nworkers) per_worker[rec.worker]++;
    received++;
  }

  /* Stop every worker: N one-shot stop events, one each. */
  if (mode == MODE_USER) {
    for (int w = 0; w < nworkers; w++)
      EV_SET(&changes[w], STOP_BASE + w, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0);
    apply(kq, changes, (size_t)nworkers);
  } else {
    for (int w = 0; w < nworkers; w++)
      if (write(pipes[nevents + w][1], "x", 1) != 1) die("write");
  }

  /* A worker that is stuck must not hang the summary. */
  int failed_workers = 0;
  time_t deadline = time(NULL) + 10;
  for (int w = 0; w < nworkers; w++) {
    int status = 0;
    pid_t r;
    while ((r = waitpid(workers[w], &status, WNOHANG)) == 0 && time(NULL) < deadline)
      usleep(10000);
    if (r == 0) {
      fprintf(stderr, "shared_queue: worker %d did not stop\n", w);
      kill(workers[w], SIGKILL);
      waitpid(workers[w], &status, 0);
    }
    if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) failed_workers++;
  }

  /* Anything still in the pipe arrived late: duplicates, or events that came
   * after the 10 s wait. */
  struct record rec;
  while (!eof && read(results[0], &rec, sizeof rec) == (ssize_t)sizeof rec) {
    if (rec.event >= 1 && rec.event <= nevents) count[rec.event]++;
    if (rec.worker >= 0 && rec.worker < nworkers) per_worker[rec.worker]++;
  }

  int delivered = 0, duplicates = 0, missing = 0;
  for (int e = 1; e <= nevents; e++) {
    if (count[e] > 0) delivered++;
    if (count[e] > 1) duplicates += count[e] - 1;
    if (count[e] == 0) missing++;
  }
  for (int w = 0; w < nworkers; w++) printf("worker %d: %d events\n", w, per_worker[w]);
  printf("events %d delivered %d duplicates %d missing %d\n", nevents, delivered, duplicates,
         missing);
  if (failed_workers) printf("workers failed %d\n", failed_workers);
  free(changes);
  free(pipes);
  free(count);
  free(per_worker);
  free(workers);
  return (duplicates == 0 && missing == 0 && failed_workers == 0) ? 0 : 1;
}
