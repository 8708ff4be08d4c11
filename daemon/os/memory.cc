#include "daemon/os/memory.h"

#include <malloc.h>

namespace kqd {

void ReturnFreedMemory() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

}  // namespace kqd
