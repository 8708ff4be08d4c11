/*
 * The runner behind tests/outside/atf/atf-c.h (kqueued's ATF stand-in).
 *
 *   prog -l                      list the test cases, one per line
 *   prog [-t SEC] [-w DIR] [CASE...]
 *                                run the named cases (default: all)
 *
 * Each case runs as ATF runs it: the head in the runner, then the body in a
 * child process of its own (its own process group) inside a fresh empty
 * directory under DIR ($TMPDIR or /tmp), then the cleanup in another child
 * in the same directory, which is removed afterwards. A body that outlives
 * its timeout (the case's "timeout" metadata, else -t, else 300 s as in ATF)
 * is killed with its whole process group; so are the processes a finished
 * body leaves behind.
 *
 * For every case one line goes to stdout:
 *   atf-result: CASE: passed
 *   atf-result: CASE: failed: REASON
 *   atf-result: CASE: skipped: REASON
 *   atf-result: CASE: expected_failure: REASON
 * The exit status is 1 if any case failed, else 0.
 */
#define _GNU_SOURCE
#include "atf-c.h"

/* Messages longer than their buffers are cut on purpose. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ATFU_MAX_CASES 256

struct atf_tp {
  atf_tc_t* cases[ATFU_MAX_CASES];
  int count;
};

/* The open result file of the running case; inherited by the body's forks
 * (not by exec: O_CLOEXEC). -1 in the runner itself. */
static int result_fd = -1;

static void write_record(char kind, const char* fmt, va_list ap) {
  char text[2048];
  int n = snprintf(text, sizeof text, "%c ", kind);
  if (fmt != NULL) n += vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
  if (n >= (int)sizeof text - 1) n = (int)sizeof text - 2;
  /* One record per line: newlines inside a message become spaces. */
  for (int i = 2; i < n; i++)
    if (text[i] == '\n') text[i] = ' ';
  text[n++] = '\n';
  if (result_fd >= 0) {
    ssize_t ignored = write(result_fd, text, (size_t)n);
    (void)ignored;
  } else {
    fputs(text, stderr);
  }
}

static void record(char kind, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  write_record(kind, fmt, ap);
  va_end(ap);
}

void atfu_tp_add(atf_tp_t* tp, atf_tc_t* tc) {
  if (tp->count == ATFU_MAX_CASES) {
    fprintf(stderr, "atf shim: more than %d test cases\n", ATFU_MAX_CASES);
    exit(2);
  }
  tp->cases[tp->count++] = tc;
}

void atf_tc_set_md_var(atf_tc_t* tc, const char* name, const char* fmt, ...) {
  char value[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(value, sizeof value, fmt, ap);
  va_end(ap);
  if (strcmp(name, "descr") == 0) {
    snprintf(tc->descr, sizeof tc->descr, "%s", value);
  } else if (strcmp(name, "require.user") == 0) {
    snprintf(tc->require_user, sizeof tc->require_user, "%.31s", value);
  } else if (strcmp(name, "timeout") == 0) {
    tc->timeout_seconds = atoi(value);
  }
}

void atf_tc_fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  write_record('F', fmt, ap);
  va_end(ap);
  exit(EXIT_FAILURE);
}

void atf_tc_fail_nonfatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  write_record('C', fmt, ap);
  va_end(ap);
}

void atf_tc_skip(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  write_record('S', fmt, ap);
  va_end(ap);
  exit(EXIT_SUCCESS);
}

void atf_tc_pass(void) {
  record('P', "%s", "");
  exit(EXIT_SUCCESS);
}

void atf_tc_expect_fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  write_record('E', fmt, ap);
  va_end(ap);
}

void atf_tc_expect_pass(void) { record('X', "%s", ""); }

void atfu_require_failed(const char* file, int line, const char* fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  atf_tc_fail("%s:%d: %s", file, line, msg);
}

void atfu_check_failed(const char* file, int line, const char* fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  atf_tc_fail_nonfatal("%s:%d: %s", file, line, msg);
}

static int remove_entry(const char* path, const struct stat* st, int flag, struct FTW* ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

/* Runs fn(tc) in a child (own process group, cwd `dir`); waits at most
 * `timeout` seconds, then kills the group. Returns the wait status, or -1
 * with *timed_out set. Kills whatever the child left in its group. */
static int run_child(void (*fn)(const atf_tc_t*), const atf_tc_t* tc, const char* dir,
                     int timeout, bool* timed_out) {
  *timed_out = false;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setpgid(0, 0);
    if (chdir(dir) != 0) {
      record('F', "cannot enter the work directory %s", dir);
      _exit(EXIT_FAILURE);
    }
    fn(tc);
    exit(EXIT_SUCCESS);
  }
  setpgid(pid, pid);
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long elapsed_ms = (now.tv_sec - start.tv_sec) * 1000LL +
                           (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed_ms >= timeout * 1000LL) {
      killpg(pid, SIGKILL);
      waitpid(pid, &status, 0);
      *timed_out = true;
      return -1;
    }
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  killpg(pid, SIGKILL); /* what the body forked and left behind */
  return status;
}

static void run_body(const atf_tc_t* tc) { tc->body(tc); }
static void run_cleanup(const atf_tc_t* tc) { tc->cleanup(tc); }

/* Runs one case; prints its result line; returns true unless it failed. */
static bool run_case(atf_tc_t* tc, const char* base, int default_timeout) {
  tc->head(tc);
  const char* name = tc->name;
  bool is_root = geteuid() == 0;
  if (strcmp(tc->require_user, "root") == 0 && !is_root) {
    printf("atf-result: %s: skipped: requires root\n", name);
    return true;
  }
  if (strcmp(tc->require_user, "unprivileged") == 0 && is_root) {
    printf("atf-result: %s: skipped: requires an unprivileged user\n", name);
    return true;
  }
  char dir[PATH_MAX];
  char results[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/atf-%s-XXXXXX", base, name);
  if (mkdtemp(dir) == NULL) {
    printf("atf-result: %s: failed: cannot create a work directory in %s\n", name, base);
    return false;
  }
  snprintf(results, sizeof results, "%s.result", dir);
  result_fd = open(results, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (result_fd < 0) {
    printf("atf-result: %s: failed: cannot create %s\n", name, results);
    return false;
  }
  int timeout = tc->timeout_seconds > 0 ? tc->timeout_seconds : default_timeout;
  bool timed_out = false;
  int status = run_child(run_body, tc, dir, timeout, &timed_out);
  bool cleanup_timed_out = false;
  if (tc->cleanup != NULL) run_child(run_cleanup, tc, dir, timeout, &cleanup_timed_out);

  /* Read the records: the first terminal one (F, S, P) decides, C adds up. */
  char verdict = 0;
  char reason[2048] = "";
  char first_check[2048] = "";
  int checks = 0;
  bool expect_fail = false;
  char expect_reason[512] = "";
  FILE* f = fdopen(dup(result_fd), "r");
  if (f != NULL) {
    rewind(f);
    char line[2100];
    while (fgets(line, sizeof line, f) != NULL) {
      line[strcspn(line, "\n")] = '\0';
      const char* text = line[0] != '\0' && line[1] == ' ' ? line + 2 : "";
      switch (line[0]) {
        case 'F':
        case 'S':
        case 'P':
          if (verdict == 0) {
            verdict = line[0];
            snprintf(reason, sizeof reason, "%s", text);
          }
          break;
        case 'C':
          if (checks++ == 0) snprintf(first_check, sizeof first_check, "%s", text);
          break;
        case 'E':
          expect_fail = true;
          snprintf(expect_reason, sizeof expect_reason, "%s", text);
          break;
        case 'X':
          expect_fail = false;
          break;
      }
    }
    fclose(f);
  }
  close(result_fd);
  result_fd = -1;
  unlink(results);
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);

  char failure[2300] = "";
  if (timed_out) {
    snprintf(failure, sizeof failure, "timed out after %d s", timeout);
  } else if (verdict == 'S') {
    printf("atf-result: %s: skipped: %s\n", name, reason);
    return true;
  } else if (verdict == 'F') {
    snprintf(failure, sizeof failure, "%s", reason);
  } else if (checks > 0) {
    snprintf(failure, sizeof failure, "%d check(s) failed; first: %s", checks, first_check);
  } else if (status == -1) {
    snprintf(failure, sizeof failure, "the body could not be run");
  } else if (WIFSIGNALED(status)) {
    snprintf(failure, sizeof failure, "the body received signal %d", WTERMSIG(status));
  } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    snprintf(failure, sizeof failure, "the body exited with status %d and no result",
             WEXITSTATUS(status));
  }
  if (failure[0] == '\0' && cleanup_timed_out) {
    snprintf(failure, sizeof failure, "the cleanup timed out after %d s", timeout);
  }
  if (expect_fail) {
    if (failure[0] != '\0') {
      printf("atf-result: %s: expected_failure: %s: %s\n", name, expect_reason, failure);
      return true;
    }
    printf("atf-result: %s: failed: the expected failure did not happen (%s)\n", name,
           expect_reason);
    return false;
  }
  if (failure[0] != '\0') {
    printf("atf-result: %s: failed: %s\n", name, failure);
    return false;
  }
  printf("atf-result: %s: passed\n", name);
  return true;
}

int atfu_main(int argc, char** argv, atf_error_t (*add_tcs)(atf_tp_t*)) {
  static atf_tp_t tp;
  add_tcs(&tp);
  int timeout = 300;
  const char* base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0') base = "/tmp";
  int opt;
  while ((opt = getopt(argc, argv, "lt:w:")) != -1) {
    switch (opt) {
      case 'l':
        for (int i = 0; i < tp.count; i++) printf("%s\n", tp.cases[i]->name);
        return 0;
      case 't':
        timeout = atoi(optarg);
        if (timeout <= 0) timeout = 300;
        break;
      case 'w':
        base = optarg;
        break;
      default:
        fprintf(stderr, "usage: %s -l | [-t SECONDS] [-w DIR] [CASE...]\n", argv[0]);
        return 2;
    }
  }
  bool all_ok = true;
  if (optind == argc) {
    for (int i = 0; i < tp.count; i++) all_ok &= run_case(tp.cases[i], base, timeout);
  } else {
    for (int a = optind; a < argc; a++) {
      atf_tc_t* tc = NULL;
      for (int i = 0; i < tp.count; i++)
        if (strcmp(tp.cases[i]->name, argv[a]) == 0) tc = tp.cases[i];
      if (tc == NULL) {
        printf("atf-result: %s: failed: no such test case\n", argv[a]);
        all_ok = false;
        continue;
      }
      all_ok &= run_case(tc, base, timeout);
    }
  }
  fflush(stdout);
  return all_ok ? 0 : 1;
}
