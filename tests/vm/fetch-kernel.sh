#!/usr/bin/env bash
# Puts a stock Debian kernel and the FUSE/CUSE modules it needs into a cache
# directory, for tests/vm/run-vm.sh to boot under qemu.
#
# Why: the machines we develop on run a kernel without CUSE, so the CUSE
# transport can only be exercised in a VM. Debian's own kernel package has
# CUSE as a module; we take it straight from apt so nothing is built here.
#
# The cache lives outside the repository (default /var/cache/kqueued-vm,
# override with $KQUEUED_VM_CACHE) because it is ~10 MB of binaries that are
# the same for every checkout. After a successful run it contains:
#   vmlinuz          the kernel image
#   config           the kernel's build configuration (for reference)
#   *.ko             fuse.ko (unless FUSE is built in), cuse.ko (unless built
#                    in) and every module they depend on, uncompressed
#   modules.load     those .ko basenames in load order (dependencies first);
#                    empty if everything is built in
#   kernel-release   e.g. 6.1.0-56-amd64
#   package          the .deb it came from (name and version)
#   .complete        written last; its presence means the cache is usable
#
# Idempotent: when .complete and every file it promises exist, this does
# nothing and touches no network. Needs network (Debian apt) only the first
# time. Run as root (apt-get download and the default cache path need it).
#
# Usage: fetch-kernel.sh [--force]    (--force refetches even when complete)
set -euo pipefail

cache="${KQUEUED_VM_CACHE:-/var/cache/kqueued-vm}"
meta_pkg="${KQUEUED_VM_KERNEL_PKG:-linux-image-amd64}"
force=0

for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "fetch-kernel: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "fetch-kernel: $*" >&2; }

# True when the cache holds a complete, usable kernel + module set.
cache_complete() {
  [ -f "$cache/.complete" ] && [ -s "$cache/vmlinuz" ] && [ -f "$cache/modules.load" ] \
    && [ -s "$cache/kernel-release" ] || return 1
  local m
  while IFS= read -r m; do
    [ -z "$m" ] && continue
    [ -s "$cache/$m" ] || return 1
  done < "$cache/modules.load"
  # cuse must be present either as a module or built in (recorded in config).
  grep -qx 'cuse.ko' "$cache/modules.load" || grep -qx 'CONFIG_CUSE=y' "$cache/config" || return 1
}

# Fast path without taking the lock or creating anything: nothing to do.
if [ "$force" = 0 ] && cache_complete; then
  log "cache $cache is complete ($(cat "$cache/kernel-release")); nothing to do"
  exit 0
fi

mkdir -p "$cache"
# Serialize concurrent runs (e.g. two test invocations on a fresh machine) so
# they do not download twice or interleave writes into the cache.
exec 9>"$cache/.lock"
flock 9
if [ "$force" = 0 ] && cache_complete; then
  log "cache $cache was completed by a concurrent run; nothing to do"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kqueued-vm-fetch.XXXXXX")"
stage=""
trap 'rm -rf "$work" ${stage:+"$stage"}' EXIT

# The metapackage linux-image-amd64 only depends on the real, versioned image
# package (linux-image-6.1.0-NN-amd64); apt-get download does not follow
# dependencies, so resolve it ourselves. Prints nothing if apt has no lists.
resolve_image_pkg() {
  apt-cache depends --important "$meta_pkg" 2>/dev/null \
    | sed -n 's/^ *|\{0,1\}Depends: *\(linux-image-[^ <>]*\).*/\1/p' \
    | head -n 1
}

pkg="$(resolve_image_pkg || true)"
updated=0
if [ -z "$pkg" ]; then
  # No package lists yet (fresh container): refresh them once and retry.
  log "cannot resolve $meta_pkg from apt's lists; running apt-get update"
  apt-get update -q >&2
  updated=1
  pkg="$(resolve_image_pkg || true)"
fi
[ -n "$pkg" ] || { log "cannot resolve the package behind $meta_pkg"; exit 1; }

download() {
  # apt downloads as the unprivileged _apt user when it can write the target
  # directory; give it the directory so apt does not warn about falling back to
  # an unsandboxed root download.
  if id _apt >/dev/null 2>&1; then
    chmod 755 "$work"
    chown _apt "$work/deb" 2>/dev/null || true
  fi
  (cd "$work/deb" && apt-get download -q "$pkg") >&2
}

mkdir -p "$work/deb"
log "downloading $pkg"
if ! download; then
  if [ "$updated" = 1 ]; then log "apt-get download $pkg failed"; exit 1; fi
  # Lists exist but are stale (the pool file was superseded): refresh, re-resolve.
  log "download failed; running apt-get update and retrying"
  apt-get update -q >&2
  pkg="$(resolve_image_pkg || true)"
  [ -n "$pkg" ] || { log "cannot resolve the package behind $meta_pkg"; exit 1; }
  rm -f "$work/deb"/*.deb
  download
fi

deb="$(ls "$work/deb"/*.deb)"
[ "$(printf '%s\n' "$deb" | wc -l)" = 1 ] || { log "expected one .deb, got: $deb"; exit 1; }
log "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root"

# Debian 12 ships modules under /lib/modules; newer releases under /usr/lib.
moddir=""
for d in "$work/root/lib/modules" "$work/root/usr/lib/modules"; do
  if [ -d "$d" ]; then moddir="$d"; break; fi
done
[ -n "$moddir" ] || { log "no lib/modules in $pkg"; exit 1; }
krel="$(ls "$moddir")"
[ "$(printf '%s\n' "$krel" | wc -l)" = 1 ] || { log "expected one kernel release, got: $krel"; exit 1; }
moddir="$moddir/$krel"

vmlinuz="$work/root/boot/vmlinuz-$krel"
config="$work/root/boot/config-$krel"
[ -f "$vmlinuz" ] || { log "no boot/vmlinuz-$krel in $pkg"; exit 1; }
[ -f "$config" ] || { log "no boot/config-$krel in $pkg"; exit 1; }

# Stage everything in a fresh directory inside the cache, then move it into
# place, so an interrupted run never leaves a half-written file that a later
# cache_complete check would accept.
stage="$cache/.stage.$$"
rm -rf "$stage"
mkdir -p "$stage"
cp "$vmlinuz" "$stage/vmlinuz"
cp "$config" "$stage/config"
printf '%s\n' "$krel" > "$stage/kernel-release"
# shellcheck disable=SC2016  # ${Package} is dpkg's syntax, not the shell's
dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" > "$stage/package"

# The .deb ships no modules.dep (depmod writes it at install time, and kmod
# need not be installed here), so read each module's own dependency list: the
# "depends=a,b" record of its .modinfo section. Names there use the module
# name, in which '-' and '_' are interchangeable.
# Copy a module (decompressing; busybox insmod reads plain ELF only) to $2.
uncompress_module() {
  case "$1" in
    *.ko.xz)  xz -dc "$1" > "$2" ;;
    *.ko.zst) zstd -qdc "$1" > "$2" ;;
    *.ko.gz)  gzip -dc "$1" > "$2" ;;
    *.ko)     cp "$1" "$2" ;;
    *) log "unexpected module file $1"; exit 1 ;;
  esac
}

# Name → path of every loadable module in the package, keyed by the name with
# '-' folded to '_'.
declare -A modpath=()
while IFS= read -r f; do
  n="$(basename "$f")"; n="${n%%.ko*}"; n="${n//-/_}"
  modpath[$n]="$f"
done < <(find "$moddir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')

module_depends() {  # $1: uncompressed .ko; prints dependency names, one a line
  local sect="$work/modinfo.bin"
  rm -f "$sect"
  if objcopy -O binary --only-section=.modinfo "$1" "$sect" 2>/dev/null && [ -s "$sect" ]; then
    tr '\0' '\n' < "$sect"
  else
    tr '\0' '\n' < "$1"   # no binutils: the records are NUL-separated strings anyway
  fi | sed -n 's/^depends=//p' | head -n1 | tr ',' '\n' | sed '/^$/d'
}

# Depth-first, dependencies before dependents, each module once: an insmod order.
declare -A seen=()
order=()
add_with_deps() {
  local n="${1//-/_}" f d
  [ -n "${seen[$n]+x}" ] && return 0
  seen[$n]=1
  f="${modpath[$n]:-}"
  if [ -z "$f" ]; then
    # Not a loadable module: fine if the kernel has it built in.
    if grep -qE "/${n//_/[-_]}\.ko\$" "$moddir/modules.builtin" 2>/dev/null; then return 0; fi
    log "module $n is neither in $pkg nor built in"; exit 1
  fi
  local base; base="$(basename "$f")"; base="${base%%.ko*}.ko"
  uncompress_module "$f" "$stage/$base"
  for d in $(module_depends "$stage/$base"); do add_with_deps "$d"; done
  order+=("$base")
}

for name in fuse cuse; do
  sym=CONFIG_FUSE_FS
  [ "$name" = cuse ] && sym=CONFIG_CUSE
  setting="$(grep -E "^$sym=|^# $sym is not set" "$config" || true)"
  case "$setting" in
    "$sym=y") log "$name is built into $krel" ;;
    "$sym=m") add_with_deps "$name" ;;
    *) log "$krel has no $name support ($sym: ${setting:-absent})"; exit 1 ;;
  esac
done

: > "$stage/modules.load"
for base in "${order[@]+"${order[@]}"}"; do printf '%s\n' "$base" >> "$stage/modules.load"; done

# Replace the cache's contents: drop the old marker first so a crash between
# the moves leaves an incomplete (and therefore refetched) cache.
rm -f "$cache/.complete"
find "$cache" -maxdepth 1 -type f \( -name '*.ko' -o -name vmlinuz -o -name config \
  -o -name modules.load -o -name kernel-release -o -name package \) -delete
mv "$stage"/* "$cache"/
rmdir "$stage"
date -u +%Y-%m-%dT%H:%M:%SZ > "$cache/.complete"

log "cache $cache ready: $krel from $(tr '\n' ' ' < "$cache/package")"
log "modules (load order): $(tr '\n' ' ' < "$cache/modules.load")"
