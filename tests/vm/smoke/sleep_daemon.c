/* Stand-in "daemon" for the VM tier smoke test (tests/vm/smoke.sh).
 *
 * It does what run-vm.sh expects of a daemon without needing CUSE: it stays
 * in the background until SIGTERM (then exits 0, as a well-behaved service
 * would). With "--mknod PATH" it first waits a second and then creates PATH as
 * a 0600 root character device (1:3, the same driver as /dev/null), like the
 * kernel does for a new CUSE node, so the VM's wait-for-device and chmod path
 * gets exercised too. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  const char *node = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--mknod") == 0 && i + 1 < argc) {
      node = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--mknod PATH]\n", argv[0]);
      return 2;
    }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);

  if (node) {
    sleep(1); /* the node should not be there at once: make /init wait */
    umask(0);
    if (mknod(node, S_IFCHR | 0600, makedev(1, 3)) != 0) {
      perror("sleep_daemon: mknod");
      return 1;
    }
    fprintf(stderr, "sleep_daemon: created %s\n", node);
  }
  while (!stop) pause();
  fprintf(stderr, "sleep_daemon: SIGTERM, exiting\n");
  return 0;
}
