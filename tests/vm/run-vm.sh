#!/usr/bin/env bash
# Boots Debian's stock kernel (fetched by tests/vm/fetch-kernel.sh) under qemu
# with a throwaway busybox initramfs, starts a daemon in it, waits for the
# device node the daemon creates, runs a test binary and reports its result.
#
# Why: CUSE needs a kernel module the development machines' kernel lacks; a VM
# with the stock kernel is the cheapest place where /dev/cuse exists.
#
# Usage:
#   run-vm.sh --daemon PATH --test PATH [options]
#     --daemon PATH        static binary started in the background first
#     --test PATH          static binary run once the device exists; its exit
#                          code becomes this script's exit code
#     --daemon-args "..."  arguments for the daemon (split on whitespace)
#     --test-args "..."    arguments for the test (split on whitespace)
#     --device PATH|none   node to wait for before running the test and to
#                          chmod 0666 (no udev in the VM); default /dev/kqueue
#     --device-wait SEC    how long to wait for it; default 10
#     --test-user USER     run the test as USER (root or nobody); default root
#     --timeout SEC        kill qemu after SEC seconds; default 300
#     --smp N              virtual CPUs; default 2 (lets daemon and test run
#                          concurrently, as on a real machine)
#     --append "..."       extra kernel command line
#     --log FILE           also keep the console log in FILE
#
# Both binaries must be statically linked: the initramfs has no libc.
# The kernel cache is $KQUEUED_VM_CACHE (default /var/cache/kqueued-vm).
# The accelerator is $KQUEUED_VM_ACCEL (default tcg; kvm where it works).
#
# Exit code: the test's exit code; 1 when no result marker came back (qemu
# timed out, the kernel panicked, ...); set-up failures inside the VM, before
# the test ran: 96 the daemon exited early, 97 the device never appeared,
# 98 insmod failed. The last line is always
# "vm: N passed, N failed", taken from the test's own output when it prints
# such a line (or a GoogleTest summary), otherwise derived from the exit code.
set -euo pipefail

cache="${KQUEUED_VM_CACHE:-/var/cache/kqueued-vm}"
daemon="" test="" daemon_args="" test_args=""
device=/dev/kqueue device_wait=10 test_user=root
timeout=300 smp=2 extra_append="" keep_log=""

usage() { sed -n '2,36p' "$0" >&2; exit 2; }
need() { [ $# -ge 2 ] || { echo "run-vm: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --daemon) need "$@"; daemon="$2"; shift 2 ;;
    --test) need "$@"; test="$2"; shift 2 ;;
    --daemon-args) need "$@"; daemon_args="$2"; shift 2 ;;
    --test-args) need "$@"; test_args="$2"; shift 2 ;;
    --device) need "$@"; device="$2"; shift 2 ;;
    --device-wait) need "$@"; device_wait="$2"; shift 2 ;;
    --test-user) need "$@"; test_user="$2"; shift 2 ;;
    --timeout) need "$@"; timeout="$2"; shift 2 ;;
    --smp) need "$@"; smp="$2"; shift 2 ;;
    --append) need "$@"; extra_append="$2"; shift 2 ;;
    --log) need "$@"; keep_log="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run-vm: unknown argument: $1" >&2; usage ;;
  esac
done

die() { echo "run-vm: $*" >&2; echo "vm: 0 passed, 1 failed"; exit 1; }

if [ -z "$daemon" ] || [ -z "$test" ]; then usage; fi
for b in "$daemon" "$test"; do
  if [ ! -f "$b" ] || [ ! -x "$b" ]; then die "not an executable file: $b"; fi
  # A dynamically linked binary would fail inside the VM with a confusing
  # "not found"; say so up front.
  # (readelf's output is captured first: with pipefail, grep -q quitting early
  # could SIGPIPE readelf and turn a match into a failure.)
  if command -v readelf >/dev/null && grep -q 'program interpreter' <<<"$(readelf -lW "$b" 2>/dev/null)"; then
    die "$b is dynamically linked; the VM has no libc, link it statically"
  fi
done
[ "$(basename "$daemon")" != "$(basename "$test")" ] || die "daemon and test need different file names"
case "$device" in
  none) ;;
  /dev/*) printf '%s' "$device" | grep -qE '^/dev/[A-Za-z0-9._/-]+$' || die "odd device path: $device" ;;
  *) die "--device must be a /dev path or none" ;;
esac
case "$test_user" in root|nobody) ;; *) die "--test-user must be root or nobody" ;; esac
for n in "$device_wait" "$timeout" "$smp"; do
  printf '%s' "$n" | grep -qE '^[0-9]+$' || die "not a whole number: $n"
done

[ -f "$cache/.complete" ] || die "no kernel in $cache; run tests/vm/fetch-kernel.sh first"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing; run scripts/setup-deps.sh"
command -v cpio >/dev/null || die "cpio missing; run scripts/setup-deps.sh"
busybox="$(command -v busybox || true)"
[ -n "$busybox" ] || die "busybox missing; run scripts/setup-deps.sh (busybox-static)"
if command -v readelf >/dev/null && grep -q 'program interpreter' <<<"$(readelf -lW "$busybox" 2>/dev/null)"; then
  die "$busybox is dynamically linked; install busybox-static"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kqueued-vm.XXXXXX")"
qemu_pid="" sleeper=""
# shellcheck disable=SC2317  # reached through the traps below
cleanup() {
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true   # qemu exits promptly on SIGTERM
  fi
  if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- initramfs -------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc,vm/modules,vm/bin}
cp "$busybox" "$root/bin/busybox"
# One symlink per applet, at the path busybox expects (bin/sh, sbin/insmod...).
"$busybox" --list-full | while IFS= read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done
# The kernel opens /dev/console for init's stdio before /init runs, and /dev
# is still empty then; mknod needs root, so without it /init reopens its
# stdio after mounting devtmpfs (it does that anyway).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"

while IFS= read -r m; do
  [ -n "$m" ] && cp "$cache/$m" "$root/vm/modules/$m"
done < "$cache/modules.load"
cp "$cache/modules.load" "$root/vm/modules.load"
daemon_name="$(basename "$daemon")" test_name="$(basename "$test")"
cp "$daemon" "$root/vm/bin/$daemon_name"
cp "$test" "$root/vm/bin/$test_name"
chmod 755 "$root/vm/bin/"*
# Arguments travel as files, not spliced into /init, so no quoting can break it.
printf '%s\n' "$daemon_args" > "$root/vm/daemon-args"
printf '%s\n' "$test_args" > "$root/vm/test-args"

# Only validated values (paths checked above, whole numbers) are spliced in.
cat > "$root/init" <<EOF
#!/bin/sh
# Generated by tests/vm/run-vm.sh. PID 1 of the test VM.
daemon=/vm/bin/$daemon_name
test=/vm/bin/$test_name
device=$device
device_wait=$device_wait
test_user=$test_user
EOF
cat >> "$root/init" <<'EOF'
# KQUEUED_VM tells a test where it runs. The serial console is a tty, which
# would make GoogleTest colour its output; keep the log plain.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ KQUEUED_VM=1 GTEST_COLOR=no
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
echo "KQUEUED-VM: booted $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"

# Report and power off. The marker is the contract with run-vm.sh. PID 1 must
# not exit (that panics the kernel), so fall back to reboot, then sleep; with
# qemu's -no-reboot either ends the VM.
finish() {
  [ -n "${2:-}" ] && echo "KQUEUED-VM: $2"
  echo "KQUEUED-VM: uptime $(cut -d' ' -f1 /proc/uptime)s"
  echo "KQUEUED-VM-RESULT: rc=$1"
  # Give the UART a moment to drain before the machine disappears.
  sleep 0.2
  poweroff -f
  reboot -f
  while :; do sleep 1; done
}

# Is the daemon gone? Its process stays a zombie until waited for, so look
# at its state rather than kill -0.
daemon_gone() {
  [ -r /proc/$dpid/stat ] || return 0
  case "$(cut -d' ' -f3 /proc/$dpid/stat)" in Z|X) return 0 ;; esac
  return 1
}

for m in $(cat /vm/modules.load); do
  insmod "/vm/modules/$m" || finish 98 "insmod $m failed"
done
[ -c /dev/fuse ] || echo "KQUEUED-VM: warning: no /dev/fuse"
[ -c /dev/cuse ] || echo "KQUEUED-VM: warning: no /dev/cuse"

set -f  # arguments are split on whitespace, never globbed
daemon_args=$(cat /vm/daemon-args)
test_args=$(cat /vm/test-args)
echo "KQUEUED-VM: starting $daemon $daemon_args"
$daemon $daemon_args &
dpid=$!

if [ "$device" != none ]; then
  # devtmpfs creates the CUSE node 0600 root as soon as the daemon's CUSE_INIT
  # reply registers it; nothing else (no udev here) would fix the mode.
  tries=$((device_wait * 10))
  while [ ! -e "$device" ]; do
    if daemon_gone; then
      wait $dpid; st=$?
      finish 96 "daemon exited with status $st before $device appeared"
    fi
    tries=$((tries - 1))
    [ $tries -gt 0 ] || finish 97 "$device did not appear within ${device_wait}s"
    sleep 0.1
  done
  chmod 0666 "$device"
  echo "KQUEUED-VM: $device ready after uptime $(cut -d' ' -f1 /proc/uptime)s: $(ls -l $device)"
fi

echo "KQUEUED-VM-TEST-BEGIN"
if [ "$test_user" = root ]; then
  $test $test_args
else
  su -s /bin/sh "$test_user" -c "exec $test $test_args"
fi
rc=$?
echo "KQUEUED-VM-TEST-END"

# Stop the daemon the way a service manager would and say how it went: a
# daemon that hangs or crashes on SIGTERM is worth seeing in the log.
if daemon_gone; then
  wait $dpid; echo "KQUEUED-VM: daemon had already exited with status $?"
else
  kill -TERM $dpid
  tries=30
  while ! daemon_gone && [ $tries -gt 0 ]; do sleep 0.1; tries=$((tries - 1)); done
  if daemon_gone; then
    wait $dpid; echo "KQUEUED-VM: daemon exited with status $? after SIGTERM"
  else
    echo "KQUEUED-VM: daemon still running 3s after SIGTERM; killing it"
    kill -KILL $dpid
  fi
fi
finish $rc
EOF
chmod 755 "$root/init"

initrd="$work/initrd.cpio"
# newc is the format the kernel unpacks; -R 0:0 makes every file root-owned
# whoever builds it. Uncompressed: TCG decompresses slowly and it is small.
(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) > "$initrd"

# ---- boot ------------------------------------------------------------------
# TCG by default: these machines have a /dev/kvm whose KVM aborts qemu
# ("failed to set MSR 0x10a"), even with -cpu host, so /dev/kvm's presence
# proves nothing. Where KVM really works, KQUEUED_VM_ACCEL=kvm speeds boots up.
accel=(-accel "${KQUEUED_VM_ACCEL:-tcg}")

# -nodefaults: no VGA, no NIC (whose option ROM may not be installed), no
# default monitor; the only device we use is the first serial port, on stdio.
qemu=(qemu-system-x86_64 "${accel[@]}" -cpu max -smp "$smp" -m 512
  -nodefaults -no-user-config -display none -serial stdio -no-reboot
  -kernel "$cache/vmlinuz" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 quiet${extra_append:+ $extra_append}")

log="$work/console.log"
echo "run-vm: kernel $(cat "$cache/kernel-release"), initramfs $(($(stat -c %s "$initrd") / 1024)) KiB, timeout ${timeout}s"
start=$(date +%s.%N)
# The console goes through sed (drop the serial line's CRs) and tee (echo it
# live and keep a copy). qemu runs in the background so that a signal to this
# script reaches its traps (which kill qemu) at once, and so that a plain
# `sleep` can race it as the timeout. stdin is /dev/null: qemu never touches
# the terminal.
exec {logfd}> >(sed -u 's/\r$//' | tee "$log")
tee_pid=$!
set +e
"${qemu[@]}" < /dev/null >&"$logfd" 2>&1 &
qemu_pid=$!
sleep "$timeout" &
sleeper=$!
wait -n -p finished "$qemu_pid" "$sleeper"
status=$?
if [ "$finished" = "$qemu_pid" ]; then
  qemu_rc=$status
  kill "$sleeper" 2>/dev/null; wait "$sleeper" 2>/dev/null
else
  sleeper=""
  echo "run-vm: timeout after ${timeout}s; killing qemu" >&"$logfd"
  kill -TERM "$qemu_pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$qemu_pid" 2>/dev/null
  wait "$qemu_pid" 2>/dev/null
  qemu_rc=124
fi
qemu_pid="" sleeper=""
set -e
end=$(date +%s.%N)
# Close our end of the log pipe and let sed/tee flush before reading the log.
exec {logfd}>&-
wait "$tee_pid" 2>/dev/null || true
[ -z "$keep_log" ] || cp "$log" "$keep_log"
# Bazel collects this directory as the test's undeclared outputs.
if [ -n "${TEST_UNDECLARED_OUTPUTS_DIR:-}" ]; then
  cp "$log" "$TEST_UNDECLARED_OUTPUTS_DIR/vm-console.log" 2>/dev/null || true
fi

elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "run-vm: qemu exited with status $qemu_rc after ${elapsed}s"

marker="$(grep -o 'KQUEUED-VM-RESULT: rc=[0-9]*' "$log" | tail -n 1 || true)"
if [ -z "$marker" ]; then
  echo "run-vm: no KQUEUED-VM-RESULT marker in the console output (timeout, panic or crash)" >&2
  echo "vm: 0 passed, 1 failed"
  exit 1
fi
rc="${marker##*=}"

# The test's own tally, from the lines between the BEGIN and END markers:
# "N passed, N failed" (our convention) or GoogleTest's summary.
# Colour escapes are dropped in case a test colours its output anyway.
test_out="$(sed -n '/KQUEUED-VM-TEST-BEGIN/,/KQUEUED-VM-TEST-END/p' "$log" | sed 's/\x1b\[[0-9;]*m//g')"
tally="$(printf '%s\n' "$test_out" | grep -oE '[0-9]+ passed, [0-9]+ failed' | tail -n 1 || true)"
if [ -n "$tally" ]; then
  passed="${tally%% passed*}"
  failed="${tally##*, }"; failed="${failed%% failed*}"
elif printf '%s\n' "$test_out" | grep -qE '^\[  PASSED  \] [0-9]+ tests?\.'; then
  passed="$(printf '%s\n' "$test_out" | sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?\..*/\1/p' | tail -n 1)"
  failed="$(printf '%s\n' "$test_out" | sed -nE 's/^\[  FAILED  \] ([0-9]+) tests?, listed below.*/\1/p' | tail -n 1)"
  failed="${failed:-0}"
elif [ "$rc" = 0 ]; then
  passed=1 failed=0
else
  passed=0 failed=1
fi
# A test that says "0 failed" but exits non-zero still failed.
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi

case "$rc" in
  96|97|98) echo "run-vm: rc=$rc: the VM failed before the test ran (see the KQUEUED-VM lines above)" ;;
  *) echo "run-vm: test exit code $rc" ;;
esac
echo "vm: $passed passed, $failed failed"
exit "$rc"
