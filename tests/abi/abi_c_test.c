/* Compiles the ABI header as C11 and checks a few values at run time. */
#include <stdio.h>

#include "proto/kqueue_abi.h"

int main(void) {
  int failures = 0;
#define EXPECT_EQ_U(a, b)                                                   \
  do {                                                                      \
    if ((unsigned long long)(a) != (unsigned long long)(b)) {               \
      fprintf(stderr, "%s = %#llx, want %#llx\n", #a,                       \
              (unsigned long long)(a), (unsigned long long)(b));            \
      failures++;                                                           \
    }                                                                       \
  } while (0)
  EXPECT_EQ_U(sizeof(struct kq_kevent), 40);
  EXPECT_EQ_U(KFILTER_BYFILTER, 0xC0186B00u);
  EXPECT_EQ_U(KFILTER_BYNAME, 0xC0186B01u);
  EXPECT_EQ_U(KQ_IOC_KEVENT, 0xC0386B40u);
  EXPECT_EQ_U(KQ_IOC_VERSION, 0x80406B41u);
  EXPECT_EQ_U(sizeof(struct kq_kevent_inline), 32);
  EXPECT_EQ_U(KQ_IOC_KEVENT_INLINE_1, 0xC0486B50u);
  EXPECT_EQ_U(KQ_IOC_KEVENT_INLINE_8, 0xC1606B51u);
  EXPECT_EQ_U(KQ_IOC_KEVENT_INLINE_64, 0xCA206B52u);
  EXPECT_EQ_U(KQ_IOC_KEVENT_INLINE_408, 0xFFE06B53u);
  printf("%d passed, %d failed\n", 10 - failures, failures);
  return failures != 0;
}
