/*
 * A sample ATF test program of the project's own, for tests/outside's CI
 * check (atf_shim_test.sh): every outcome the stand-in must report, built
 * the way run-netbsd.sh builds NetBSD's programs (netbsd/compat.h
 * force-included), so a break in either shows up without a fetched tree.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atf-c.h>

ATF_TC(passes);
ATF_TC_HEAD(passes, tc) { atf_tc_set_md_var(tc, "descr", "a body that returns passes"); }
ATF_TC_BODY(passes, tc) {
  ATF_REQUIRE(1 + 1 == 2);
  ATF_CHECK_EQ(3, 3);
  ATF_REQUIRE_STREQ("a", "a");
  ATF_REQUIRE_ERRNO(ENOENT, open("/nonexistent/x", O_RDONLY) == -1);
}

ATF_TC(require_fails);
ATF_TC_HEAD(require_fails, tc) { atf_tc_set_md_var(tc, "descr", "a failed ATF_REQUIRE ends the body"); }
ATF_TC_BODY(require_fails, tc) {
  ATF_REQUIRE_EQ_MSG(1, 2, "one is %d", 1);
  printf("not reached\n");
  exit(3);
}

ATF_TC(check_fails);
ATF_TC_HEAD(check_fails, tc) { atf_tc_set_md_var(tc, "descr", "ATF_CHECK goes on, then fails the case"); }
ATF_TC_BODY(check_fails, tc) {
  ATF_CHECK(0 == 1);
  ATF_CHECK_MSG(0, "second %s", "check");
  printf("body went on after the checks\n");
}

ATF_TC(skips);
ATF_TC_HEAD(skips, tc) { atf_tc_set_md_var(tc, "descr", "atf_tc_skip"); }
ATF_TC_BODY(skips, tc) { atf_tc_skip("no %s here", "frobnicator"); }

ATF_TC(times_out);
ATF_TC_HEAD(times_out, tc) { atf_tc_set_md_var(tc, "timeout", "1"); }
ATF_TC_BODY(times_out, tc) {
  /* A forked helper in the same group must be killed too. */
  if (fork() == 0) pause();
  pause();
}

ATF_TC(crashes);
ATF_TC_HEAD(crashes, tc) { atf_tc_set_md_var(tc, "descr", "a signal ends the body"); }
ATF_TC_BODY(crashes, tc) { raise(SIGKILL); }

ATF_TC(child_fails);
ATF_TC_HEAD(child_fails, tc) { atf_tc_set_md_var(tc, "descr", "a failed requirement in a forked child counts"); }
ATF_TC_BODY(child_fails, tc) {
  pid_t pid = fork();
  ATF_REQUIRE(pid != -1);
  if (pid == 0) {
    ATF_REQUIRE_MSG(0, "in the child");
    _exit(0);
  }
  int status;
  ATF_REQUIRE(waitpid(pid, &status, 0) == pid);
}

ATF_TC(expected_failure);
ATF_TC_HEAD(expected_failure, tc) { atf_tc_set_md_var(tc, "descr", "atf_tc_expect_fail"); }
ATF_TC_BODY(expected_failure, tc) {
  atf_tc_expect_fail("known %s", "bug");
  ATF_REQUIRE(0);
}

ATF_TC_WITH_CLEANUP(cleanup_runs);
ATF_TC_HEAD(cleanup_runs, tc) { atf_tc_set_md_var(tc, "descr", "the cleanup runs in the body's directory"); }
ATF_TC_BODY(cleanup_runs, tc) {
  int fd = open("marker", O_WRONLY | O_CREAT, 0600);
  ATF_REQUIRE(fd >= 0);
  close(fd);
}
ATF_TC_CLEANUP(cleanup_runs, tc) {
  struct stat st;
  printf("cleanup: marker %s\n", stat("marker", &st) == 0 ? "present" : "missing");
  fflush(stdout);
}

ATF_TC(root_only);
ATF_TC_HEAD(root_only, tc) { atf_tc_set_md_var(tc, "require.user", "root"); }
ATF_TC_BODY(root_only, tc) { ATF_REQUIRE(geteuid() == 0); }

/* What netbsd/compat.h provides to NetBSD's sources. */
ATF_TC(netbsd_compat);
ATF_TC_HEAD(netbsd_compat, tc) { atf_tc_set_md_var(tc, "descr", "strlcpy, timespecsub, sin_len, accept"); }
ATF_TC_BODY(netbsd_compat, tc) {
  char buf[4];
  ATF_REQUIRE_EQ(strlcpy(buf, "abcdef", sizeof buf), 6);
  ATF_REQUIRE_STREQ(buf, "abc");
  ATF_REQUIRE_EQ(strlcat(buf, "xyz", sizeof buf), 6);
  struct timespec a = {5, 100}, b = {3, 200}, r;
  timespecsub(&a, &b, &r);
  ATF_REQUIRE(r.tv_sec == 1 && r.tv_nsec == 999999900);

  int ls = socket(PF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  ATF_REQUIRE(ls >= 0);
  struct sockaddr_in sin = {
      .sin_len = sizeof(sin),
      .sin_family = AF_INET,
      .sin_port = 0,
      .sin_addr = {.s_addr = htonl(INADDR_LOOPBACK)},
  };
  ATF_REQUIRE(bind(ls, (struct sockaddr*)&sin, sizeof sin) == 0);
  ATF_REQUIRE(listen(ls, 1) == 0);
  socklen_t len = sizeof sin;
  ATF_REQUIRE(getsockname(ls, (struct sockaddr*)&sin, &len) == 0);
  int c = socket(PF_INET, SOCK_STREAM, 0);
  ATF_REQUIRE(connect(c, (struct sockaddr*)&sin, sizeof sin) == 0);
  int s = accept(ls, NULL, NULL);
  ATF_REQUIRE(s >= 0);
  /* As on NetBSD: the listener's O_NONBLOCK is inherited. */
  ATF_REQUIRE(fcntl(s, F_GETFL) & O_NONBLOCK);
}

ATF_TP_ADD_TCS(tp) {
  ATF_TP_ADD_TC(tp, passes);
  ATF_TP_ADD_TC(tp, require_fails);
  ATF_TP_ADD_TC(tp, check_fails);
  ATF_TP_ADD_TC(tp, skips);
  ATF_TP_ADD_TC(tp, times_out);
  ATF_TP_ADD_TC(tp, crashes);
  ATF_TP_ADD_TC(tp, child_fails);
  ATF_TP_ADD_TC(tp, expected_failure);
  ATF_TP_ADD_TC(tp, cleanup_runs);
  ATF_TP_ADD_TC(tp, root_only);
  ATF_TP_ADD_TC(tp, netbsd_compat);
  return atf_no_error();
}
