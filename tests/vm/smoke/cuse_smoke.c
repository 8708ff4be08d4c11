/* Smoke test for the VM tier (tests/vm/run-vm.sh), run as the "test" binary.
 *
 * Checks what the real CUSE tests rely on once /init has loaded the modules:
 * /dev/cuse and /dev/fuse are character devices. With "--device PATH" it also
 * checks the node the "daemon" created: a character device that /init made
 * mode 0666 and that this process (possibly not root) can open read-write.
 *
 * Prints "smoke: N passed, N failed" (the line run-vm.sh tallies) and exits
 * 0 only when nothing failed. Built with plain `gcc -static` by smoke.sh. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static int passed, failed;

static void report(int ok, const char *what, const char *detail) {
  if (ok) {
    passed++;
    printf("smoke: PASS %s\n", what);
  } else {
    failed++;
    printf("smoke: FAIL %s: %s\n", what, detail);
  }
}

/* A character device at path, optionally with exactly the given mode bits. */
static void check_chardev(const char *path, int want_mode) {
  char what[256], detail[256];
  struct stat st;
  snprintf(what, sizeof what, "%s is a character device%s", path,
           want_mode >= 0 ? " with mode 0666" : "");
  if (stat(path, &st) != 0) {
    snprintf(detail, sizeof detail, "stat: %s", strerror(errno));
    report(0, what, detail);
    return;
  }
  snprintf(detail, sizeof detail, "type/mode 0%o, rdev %u:%u", (unsigned)st.st_mode,
           major(st.st_rdev), minor(st.st_rdev));
  int ok = S_ISCHR(st.st_mode) && (want_mode < 0 || (int)(st.st_mode & 07777) == want_mode);
  report(ok, what, detail);
  if (ok) printf("smoke:   (%s)\n", detail);
}

int main(int argc, char **argv) {
  const char *device = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--device PATH]\n", argv[0]);
      return 2;
    }
  }
  /* Line-buffered so the output interleaves sensibly with the console's. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("smoke: running as uid %d\n", (int)getuid());

  check_chardev("/dev/cuse", -1);
  check_chardev("/dev/fuse", -1);
  if (device) {
    check_chardev(device, 0666);
    int fd = open(device, O_RDWR);
    char what[256];
    snprintf(what, sizeof what, "open(%s, O_RDWR)", device);
    report(fd >= 0, what, strerror(errno));
    if (fd >= 0) close(fd);
  }

  printf("smoke: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
