#!/bin/bash
# The run-*.sh scripts: --help works, and a tree that is not the suite's is
# refused before anything is built or started.
set -u
here=${TEST_SRCDIR:-}/${TEST_WORKSPACE:-kqueued}/tests/outside
[ -f "$here/lib.sh" ] || here=$(cd "$(dirname "$0")" && pwd)
empty=$(mktemp -d "${TEST_TMPDIR:-/tmp}/outside-empty.XXXXXX")
fail=0
for s in run-netbsd.sh run-libkqueue.sh run-cpython.sh run-libevent.sh; do
  if ! bash "$here/$s" --help | grep -q "^  *tests/outside/$s"; then
    echo "FAIL: $s --help does not show its usage"
    fail=1
  fi
  out=$(bash "$here/$s" --work "$empty/w" "$empty" 2>&1)
  status=$?
  if [ "$status" != 2 ]; then
    echo "FAIL: $s accepted an empty tree (status $status): $out"
    fail=1
  fi
  if [ -e "$empty/w/prefix" ]; then
    echo "FAIL: $s installed something before checking the tree"
    fail=1
  fi
  bash "$here/$s" --bogus > /dev/null 2>&1
  [ $? = 2 ] || { echo "FAIL: $s accepted an unknown option"; fail=1; }
done
[ "$fail" = 0 ] && echo PASS
exit "$fail"
