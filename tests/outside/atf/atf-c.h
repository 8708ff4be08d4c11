/*
 * A small stand-in for ATF's <atf-c.h>, written for kqueued: enough of the
 * C test-program interface to build and run NetBSD's tests/kernel/kqueue
 * programs on Linux. It is not ATF: there is no Kyuafile, no config
 * variables and no atf-run; each test program is its own runner (see
 * atf-c.c and tests/outside/README.md for the command line).
 *
 * Supported:
 *   ATF_TC, ATF_TC_WITH_CLEANUP, ATF_TC_WITHOUT_HEAD, ATF_TC_HEAD,
 *   ATF_TC_BODY, ATF_TC_CLEANUP, ATF_TP_ADD_TCS, ATF_TP_ADD_TC;
 *   atf_tc_set_md_var ("descr", "timeout", "require.user" = root|unprivileged;
 *   other names are recorded and ignored);
 *   ATF_REQUIRE, ATF_REQUIRE_MSG, ATF_REQUIRE_EQ, ATF_REQUIRE_EQ_MSG,
 *   ATF_REQUIRE_STREQ, ATF_REQUIRE_ERRNO and the ATF_CHECK* twins
 *   (non-fatal: the body goes on, the case fails at the end);
 *   atf_tc_fail, atf_tc_fail_nonfatal, atf_tc_skip, atf_tc_pass,
 *   atf_tc_expect_fail, atf_tc_expect_pass, atf_no_error.
 * Anything else fails to compile, which is the honest answer.
 */
#ifndef KQUEUED_OUTSIDE_ATF_C_H_
#define KQUEUED_OUTSIDE_ATF_C_H_

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One test case: its name, its three functions and its metadata. */
typedef struct atf_tc {
  const char* name;
  void (*head)(struct atf_tc*);
  void (*body)(const struct atf_tc*);
  void (*cleanup)(const struct atf_tc*);
  char descr[512];
  char require_user[32];
  int timeout_seconds; /* 0: the runner's default */
} atf_tc_t;

/* The test program: the cases in registration order. */
typedef struct atf_tp atf_tp_t;

/* ATF's error objects reduced to a code; only atf_no_error() is made. */
typedef int atf_error_t;
static inline atf_error_t atf_no_error(void) { return 0; }

/* Registers `tc` with the program (called by ATF_TP_ADD_TC). */
void atfu_tp_add(atf_tp_t* tp, atf_tc_t* tc);
/* The runner: parses argv, runs the cases, returns the exit status. */
int atfu_main(int argc, char** argv, atf_error_t (*add_tcs)(atf_tp_t*));

/* Sets metadata; names other than descr, timeout and require.user are
 * accepted and ignored (they only steer atf-run). */
void atf_tc_set_md_var(atf_tc_t* tc, const char* name, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Outcomes, callable from a body. fail/skip/pass end the body. */
void atf_tc_fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void atf_tc_fail_nonfatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void atf_tc_skip(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void atf_tc_pass(void) __attribute__((noreturn));
void atf_tc_expect_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void atf_tc_expect_pass(void);

/* Used by the macros: a failed requirement (fatal) or check (non-fatal). */
void atfu_require_failed(const char* file, int line, const char* fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
void atfu_check_failed(const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ATFU_DECL(tc, cleanup_fn)                          \
  static void atfu_##tc##_head(atf_tc_t*);                 \
  static void atfu_##tc##_body(const atf_tc_t*);           \
  static atf_tc_t atfu_##tc##_tc = {#tc, atfu_##tc##_head, \
                                    atfu_##tc##_body, cleanup_fn, {0}, {0}, 0}

#define ATF_TC(tc) ATFU_DECL(tc, NULL)
#define ATF_TC_WITH_CLEANUP(tc)                      \
  static void atfu_##tc##_cleanup(const atf_tc_t*); \
  ATFU_DECL(tc, atfu_##tc##_cleanup)
#define ATF_TC_WITHOUT_HEAD(tc)                                      \
  ATFU_DECL(tc, NULL);                                               \
  static void atfu_##tc##_head(atf_tc_t* atfu_tc) { (void)atfu_tc; } \
  struct atfu_##tc##_semicolon
#define ATF_TC_HEAD(tc, tcv) static void atfu_##tc##_head(atf_tc_t* tcv)
#define ATF_TC_BODY(tc, tcv) \
  static void atfu_##tc##_body(const atf_tc_t* tcv __attribute__((unused)))
#define ATF_TC_CLEANUP(tc, tcv) \
  static void atfu_##tc##_cleanup(const atf_tc_t* tcv __attribute__((unused)))

#define ATF_TP_ADD_TCS(tp)                               \
  static atf_error_t atfu_add_tcs(atf_tp_t*);            \
  int main(int argc, char** argv) {                      \
    return atfu_main(argc, argv, atfu_add_tcs);          \
  }                                                      \
  static atf_error_t atfu_add_tcs(atf_tp_t* tp)
#define ATF_TP_ADD_TC(tp, tc) atfu_tp_add((tp), &atfu_##tc##_tc)

#define ATFU_TEST(fail, x, ...)                                         \
  do {                                                                  \
    if (!(x)) fail(__FILE__, __LINE__, __VA_ARGS__);                    \
  } while (0)

#define ATF_REQUIRE(x) ATFU_TEST(atfu_require_failed, x, "%s not met", #x)
#define ATF_CHECK(x) ATFU_TEST(atfu_check_failed, x, "%s not met", #x)
#define ATF_REQUIRE_MSG(x, ...) ATFU_TEST(atfu_require_failed, x, __VA_ARGS__)
#define ATF_CHECK_MSG(x, ...) ATFU_TEST(atfu_check_failed, x, __VA_ARGS__)
#define ATF_REQUIRE_EQ(a, b) \
  ATFU_TEST(atfu_require_failed, (a) == (b), "%s != %s", #a, #b)
#define ATF_CHECK_EQ(a, b) \
  ATFU_TEST(atfu_check_failed, (a) == (b), "%s != %s", #a, #b)
#define ATF_REQUIRE_EQ_MSG(a, b, fmt, ...) \
  ATFU_TEST(atfu_require_failed, (a) == (b), "%s != %s: " fmt, #a, #b, ##__VA_ARGS__)
#define ATF_CHECK_EQ_MSG(a, b, fmt, ...) \
  ATFU_TEST(atfu_check_failed, (a) == (b), "%s != %s: " fmt, #a, #b, ##__VA_ARGS__)
#define ATF_REQUIRE_STREQ(a, b)                                           \
  ATFU_TEST(atfu_require_failed, strcmp((a), (b)) == 0, "%s != %s (%s != %s)", \
            #a, #b, (a), (b))
#define ATF_CHECK_STREQ(a, b)                                           \
  ATFU_TEST(atfu_check_failed, strcmp((a), (b)) == 0, "%s != %s (%s != %s)", \
            #a, #b, (a), (b))
/* The expression must be true and errno must then equal `e`. */
#define ATF_REQUIRE_ERRNO(e, x)                                              \
  do {                                                                       \
    bool atfu_ok_ = (x);                                                     \
    int atfu_errno_ = errno;                                                 \
    if (!atfu_ok_)                                                           \
      atfu_require_failed(__FILE__, __LINE__, "%s not met", #x);             \
    if (atfu_errno_ != (e))                                                  \
      atfu_require_failed(__FILE__, __LINE__, "expected errno %d, got %d (%s)", \
                          (int)(e), atfu_errno_, strerror(atfu_errno_));     \
  } while (0)
#define ATF_CHECK_ERRNO(e, x)                                                \
  do {                                                                       \
    bool atfu_ok_ = (x);                                                     \
    int atfu_errno_ = errno;                                                 \
    if (!atfu_ok_)                                                           \
      atfu_check_failed(__FILE__, __LINE__, "%s not met", #x);               \
    else if (atfu_errno_ != (e))                                             \
      atfu_check_failed(__FILE__, __LINE__, "expected errno %d, got %d (%s)", \
                        (int)(e), atfu_errno_, strerror(atfu_errno_));       \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif /* KQUEUED_OUTSIDE_ATF_C_H_ */
