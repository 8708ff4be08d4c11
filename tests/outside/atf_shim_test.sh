#!/bin/bash
# Runs :atf_selftest through the ATF stand-in and checks every result line.
set -u
prog=${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-kqueued}/tests/outside/atf_selftest
[ -x "$prog" ] || prog=$(dirname "$0")/atf_selftest
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/atf-selftest-work.XXXXXX")
fail=0

expect_list="passes require_fails check_fails skips times_out crashes child_fails expected_failure cleanup_runs root_only netbsd_compat"
got_list=$("$prog" -l | tr '\n' ' ' | sed 's/ $//')
if [ "$got_list" != "$expect_list" ]; then
  echo "FAIL: -l listed '$got_list'"
  fail=1
fi

# __FILE__ differs between builds: keep only the file name.
"$prog" -w "$work" > "$work/selftest.out" 2>&1
status=$?
out=$(sed 's|[^ ]*/atf_selftest\.c|atf_selftest.c|g' "$work/selftest.out")
echo "$out"
check() {
  if ! grep -qxF -- "$1" <<< "$out"; then
    echo "FAIL: missing line: $1"
    fail=1
  fi
}
check "atf-result: passes: passed"
check "atf-result: require_fails: failed: atf_selftest.c:34: 1 != 2: one is 1"
check "body went on after the checks"
check "atf-result: check_fails: failed: 2 check(s) failed; first: atf_selftest.c:42: 0 == 1 not met"
check "atf-result: skips: skipped: no frobnicator here"
check "atf-result: times_out: failed: timed out after 1 s"
check "atf-result: crashes: failed: the body received signal 9"
check "atf-result: child_fails: failed: atf_selftest.c:69: in the child"
check "atf-result: expected_failure: expected_failure: known bug: atf_selftest.c:80: 0 not met"
check "cleanup: marker present"
check "atf-result: cleanup_runs: passed"
check "atf-result: netbsd_compat: passed"
if [ "$(id -u)" = 0 ]; then
  check "atf-result: root_only: passed"
else
  check "atf-result: root_only: skipped: requires root"
fi
if grep -q "not reached" <<< "$out"; then
  echo "FAIL: the body went on after a failed ATF_REQUIRE"
  fail=1
fi
[ "$status" = 1 ] || { echo "FAIL: exit status $status, want 1 (some cases fail)"; fail=1; }

# One named case; a passing run exits 0; an unknown name fails.
"$prog" -w "$work" passes | grep -qxF "atf-result: passes: passed" || { echo "FAIL: single case"; fail=1; }
"$prog" -w "$work" passes > /dev/null || { echo "FAIL: a passing run exits non-zero"; fail=1; }
"$prog" -w "$work" nosuch | grep -qxF "atf-result: nosuch: failed: no such test case" ||
  { echo "FAIL: unknown case"; fail=1; }

# The helper forked by times_out was killed with the body's group (its
# command line names $work), and no work directory is left behind.
if pgrep -f -- "$work" > /dev/null; then
  echo "FAIL: processes left: $(pgrep -af -- "$work")"
  fail=1
fi
if ls "$work" | grep -q '^atf-'; then
  echo "FAIL: work directories left: $(ls "$work")"
  fail=1
fi
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
