/*
 * proc_watch — follow a process with EVFILT_PROC.
 *
 *   proc_watch [--track] -p PID
 *   proc_watch [--track] -- COMMAND [ARG...]
 *
 * Watches PID (or a COMMAND it starts) for NOTE_FORK, NOTE_EXEC and
 * NOTE_EXIT and prints one line per note:
 *   pid 123: NOTE_FORK
 *   pid 123: NOTE_EXEC
 *   pid 123: NOTE_EXIT exited 3
 * With --track, children are followed too (NOTE_TRACK): their creation is
 * reported as "pid 124: NOTE_CHILD of 123" and their notes as above.
 * Ends when the first process exits; in COMMAND mode the exit status is the
 * command's.
 */
#include <sys/types.h>
#include <sys/event.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void) {
  fprintf(stderr,
          "usage: proc_watch [--track] -p PID\n"
          "       proc_watch [--track] -- COMMAND [ARG...]\n");
  exit(2);
}

/* NOTE_EXIT's data is a wait(2) status. */
static void print_status(int64_t data) {
  int status = (int)data;
  if (WIFEXITED(status)) {
    printf(" exited %d", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    printf(" killed by signal %d", WTERMSIG(status));
  } else {
    printf(" status 0x%x", status);
  }
}

static void print_event(const struct kevent *ev) {
  pid_t pid = (pid_t)ev->ident;
  if (ev->fflags & NOTE_CHILD) {
    /* A tracked child's first event: data is the parent's pid. */
    printf("pid %d: NOTE_CHILD of %d\n", (int)pid, (int)ev->data);
  }
  if (ev->fflags & NOTE_TRACKERR) printf("pid %d: NOTE_TRACKERR\n", (int)pid);
  if (ev->fflags & NOTE_FORK) printf("pid %d: NOTE_FORK\n", (int)pid);
  if (ev->fflags & NOTE_EXEC) printf("pid %d: NOTE_EXEC\n", (int)pid);
  /* NOTE_EXIT arrives with EV_EOF even when it was not asked for. */
  if ((ev->fflags & NOTE_EXIT) || (ev->flags & EV_EOF)) {
    printf("pid %d: NOTE_EXIT", (int)pid);
    print_status(ev->data);
    printf("\n");
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  int track = 0;
  pid_t pid = -1;
  char **command = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--track") == 0) {
      track = 1;
    } else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
      pid = (pid_t)atol(argv[++i]);
    } else if (strcmp(argv[i], "--") == 0 && i + 1 < argc) {
      command = &argv[i + 1];
      break;
    } else {
      usage();
    }
  }
  if ((pid > 0) == (command != NULL)) usage();

  int kq = kqueue();
  if (kq < 0) {
    perror("kqueue");
    return 1;
  }

  /* COMMAND mode: the child waits on a pipe until the knote exists, so its
   * exec (and anything after) cannot happen before we watch. */
  int gate[2] = {-1, -1};
  if (command != NULL) {
    if (pipe(gate) < 0) {
      perror("pipe");
      return 1;
    }
    pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      char c;
      close(gate[1]);
      close(kq); /* shared across fork by kqueued; the command needs none */
      while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
      }
      close(gate[0]);
      execvp(command[0], command);
      fprintf(stderr, "proc_watch: %s: %s\n", command[0], strerror(errno));
      _exit(127);
    }
    close(gate[0]);
  }

  struct kevent change;
  uint32_t notes = NOTE_EXIT | NOTE_FORK | NOTE_EXEC | (track ? NOTE_TRACK : 0);
  EV_SET(&change, pid, EVFILT_PROC, EV_ADD, notes, 0, 0);
  if (kevent(kq, &change, 1, NULL, 0, NULL) < 0) {
    fprintf(stderr, "proc_watch: kevent (EVFILT_PROC, pid %d): %s\n", (int)pid,
            strerror(errno));
    if (command != NULL) kill(pid, SIGKILL);
    return 1;
  }
  printf("watching pid %d\n", (int)pid);
  fflush(stdout);
  if (command != NULL) close(gate[1]); /* let the command run */

  int status = 0;
  for (;;) {
    struct kevent events[16];
    int n = kevent(kq, NULL, 0, events, sizeof events / sizeof events[0], NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("kevent");
      return 1;
    }
    int done = 0;
    for (int i = 0; i < n; i++) {
      if (events[i].flags & EV_ERROR) {
        fprintf(stderr, "proc_watch: pid %lu: %s\n", (unsigned long)events[i].ident,
                strerror((int)events[i].data));
        continue;
      }
      print_event(&events[i]);
      if ((pid_t)events[i].ident == pid &&
          ((events[i].fflags & NOTE_EXIT) || (events[i].flags & EV_EOF))) {
        status = (int)events[i].data;
        done = 1;
      }
    }
    if (done) break;
  }
  if (command != NULL) {
    /* The knote fired while the child was a zombie; reap it now. */
    int reaped;
    while (waitpid(pid, &reaped, 0) < 0 && errno == EINTR) {
    }
    status = reaped;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  }
  return 0;
}
