/*
 * <sys/event.h> as strict ISO C11 (-std=c11 -Wpedantic -Werror): the header
 * itself must need no extensions. Checks the layout and EV_SET at run time.
 */
#include <sys/event.h>

#include <stdio.h>
#include <string.h>

static int failures;

#define EXPECT(cond)                                                \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                   \
    }                                                               \
  } while (0)

int main(void) {
  struct kevent ev;
  int anchor;
  memset(&ev, 0xAA, sizeof ev);
  /* Integers and pointers both go through EV_SET's udata. */
  EV_SET(&ev, 3, EVFILT_READ, EV_ADD | EV_CLEAR, NOTE_LOWAT, 16, 7);
  EXPECT(ev.ident == 3);
  EXPECT(ev.filter == EVFILT_READ);
  EXPECT(ev.flags == (EV_ADD | EV_CLEAR));
  EXPECT(ev.fflags == NOTE_LOWAT);
  EXPECT(ev.data == 16);
  EXPECT(ev.udata == (void *)7);
  EV_SET(&ev, -1, EVFILT_USER, 0, NOTE_TRIGGER, -5, &anchor);
  EXPECT(ev.ident == (uintptr_t)-1);
  EXPECT(ev.data == -5);
  EXPECT(ev.udata == &anchor);
  /* The 4 padding bytes after fflags are zeroed, so an EV_SET event and
   * the daemon's copy of it (padding zero) compare equal with memcmp. */
  {
    unsigned char zero[4] = {0, 0, 0, 0};
    memset(&ev, 0xAA, sizeof ev);
    EV_SET(&ev, 5, EVFILT_READ, EV_ADD, 0, 0, 0);
    EXPECT(memcmp((unsigned char *)&ev + offsetof(struct kevent, fflags) + sizeof ev.fflags,
                  zero, sizeof zero) == 0);
  }
  /* The arguments may read the event being set. */
  EV_SET(&ev, ev.ident + 1, ev.filter, ev.flags | EV_CLEAR, 0, 0, 0);
  EXPECT(ev.ident == 6 && ev.filter == EVFILT_READ && ev.flags == (EV_ADD | EV_CLEAR));
  /* kevp is evaluated once. */
  {
    struct kevent arr[2];
    struct kevent *p = arr;
    EV_SET(p++, 1, EVFILT_TIMER, EV_ADD, 0, 10, 0);
    EXPECT(p == arr + 1);
  }
  EXPECT(sizeof(struct kevent) == 40);
  EXPECT(offsetof(struct kevent, data) == 24);
  EXPECT(offsetof(struct kevent, udata) == 32);
  EXPECT(EVFILT_TIMER == 6 && EVFILT_USER == 8);
  EXPECT(EV_EOF == 0x8000 && EV_ERROR == 0x4000);
  EXPECT(KFILTER_BYNAME == 0xC0186B01u);
  printf("%d failed\n", failures);
  return failures != 0;
}
