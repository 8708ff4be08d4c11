/*
 * file_watch — report changes to files with EVFILT_VNODE.
 *
 *   file_watch [--count N] FILE...
 *
 * Opens each FILE read-only and watches it for every vnode note. Prints
 * "watching N files" once the watches are in place, then one line per event:
 *   FILE: NOTE_WRITE|NOTE_EXTEND
 * A deleted or revoked file is dropped from the watch list; the program ends
 * when no file is left, or after N events with --count N.
 */
#include <sys/types.h>
#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
  uint32_t note;
  const char *name;
} kNotes[] = {
    {NOTE_DELETE, "NOTE_DELETE"}, {NOTE_WRITE, "NOTE_WRITE"},
    {NOTE_EXTEND, "NOTE_EXTEND"}, {NOTE_ATTRIB, "NOTE_ATTRIB"},
    {NOTE_LINK, "NOTE_LINK"},     {NOTE_RENAME, "NOTE_RENAME"},
    {NOTE_REVOKE, "NOTE_REVOKE"}, {NOTE_OPEN, "NOTE_OPEN"},
    {NOTE_CLOSE, "NOTE_CLOSE"},   {NOTE_CLOSE_WRITE, "NOTE_CLOSE_WRITE"},
    {NOTE_READ, "NOTE_READ"},
};

static void print_notes(const char *path, uint32_t fflags) {
  printf("%s: ", path);
  const char *sep = "";
  for (size_t i = 0; i < sizeof kNotes / sizeof kNotes[0]; i++) {
    if (fflags & kNotes[i].note) {
      printf("%s%s", sep, kNotes[i].name);
      sep = "|";
    }
  }
  if (*sep == '\0') printf("0x%x", fflags);
  printf("\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  long count = -1;
  int first = 1;
  if (argc > 2 && strcmp(argv[1], "--count") == 0) {
    count = atol(argv[2]);
    first = 3;
  }
  int nfiles = argc - first;
  if (nfiles <= 0) {
    fprintf(stderr, "usage: file_watch [--count N] FILE...\n");
    return 2;
  }

  int kq = kqueue();
  if (kq < 0) {
    perror("kqueue");
    return 1;
  }
  struct kevent *changes = calloc((size_t)nfiles, sizeof *changes);
  if (changes == NULL) {
    perror("calloc");
    return 1;
  }
  const uint32_t all = NOTE_DELETE | NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB | NOTE_LINK |
                       NOTE_RENAME | NOTE_REVOKE | NOTE_OPEN | NOTE_CLOSE |
                       NOTE_CLOSE_WRITE | NOTE_READ;
  for (int i = 0; i < nfiles; i++) {
    const char *path = argv[first + i];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
      fprintf(stderr, "file_watch: %s: %s\n", path, strerror(errno));
      return 1;
    }
    /* EV_CLEAR: report each burst of changes once, with the notes OR'ed
     * together, instead of re-reporting until someone resets them. udata
     * remembers the name for printing. */
    EV_SET(&changes[i], fd, EVFILT_VNODE, EV_ADD | EV_CLEAR, all, 0, path);
  }
  /* All at once; with nevents == 0 a refused change fails the call. */
  if (kevent(kq, changes, (size_t)nfiles, NULL, 0, NULL) < 0) {
    perror("kevent (EVFILT_VNODE)");
    return 1;
  }
  printf("watching %d files\n", nfiles);
  fflush(stdout);

  int watched = nfiles;
  long seen = 0;
  struct kevent events[16];
  while (watched > 0 && (count < 0 || seen < count)) {
    int n = kevent(kq, NULL, 0, events, sizeof events / sizeof events[0], NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("kevent");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      const char *path = events[i].udata;
      if (events[i].flags & EV_ERROR) {
        fprintf(stderr, "file_watch: %s: %s\n", path, strerror((int)events[i].data));
        return 1;
      }
      print_notes(path, events[i].fflags);
      seen++;
      if (events[i].fflags & (NOTE_DELETE | NOTE_REVOKE)) {
        /* Gone: nothing more will happen to it. close() removes the knote. */
        close((int)events[i].ident);
        watched--;
      }
    }
  }
  free(changes);
  close(kq);
  return 0;
}
