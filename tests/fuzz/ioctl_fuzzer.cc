// libFuzzer target over the service's request decoding: KqueueDevice::Ioctl
// as the transport calls it, with the fuzzer's own thread as the caller, so
// the daemon's reads and writes of "caller memory" (process_vm_readv/writev)
// land in this process. Every pointer an input can make is confined to two
// arenas, each followed by an inaccessible guard page: a count or offset that
// runs past an arena must fail with EFAULT, never touch anything else.
//
// Input format, repeated: one op byte, then a 64-byte request record.
//   op % 5: KQ_IOC_KEVENT, KQ_IOC_VERSION, KFILTER_BYNAME, KFILTER_BYFILTER,
//           or the record's first 4 bytes as a raw command
//   op bit 3: pass a wrong argument size
// The first 2 pages of input after the records fill the arenas (changes,
// filter names).
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "daemon/core/user_limits.h"
#include "daemon/service/kqueue_device.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kArena = 2 * kPage;

// `kArena` writable bytes followed by a PROT_NONE page.
uint8_t* GuardedArena() {
  void* p = mmap(nullptr, kArena + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) abort();
  if (mprotect(static_cast<uint8_t*>(p) + kArena, kPage, PROT_NONE) != 0) abort();
  return static_cast<uint8_t*>(p);
}

struct World {
  kqd::testing::TestRuntime runtime;
  kqd::KqueueDevice device{runtime.get(), "/nonexistent/kqueued-fuzz"};
  uint8_t* in_arena = GuardedArena();   // changes and names the daemon reads
  uint8_t* out_arena = GuardedArena();  // events and names it writes
  // The only instance a KQ_IOC_LOCAL_ATTACH may name: the caller is this
  // process, whose other epoll instances are the daemon's own (a client
  // cannot name those).
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
};

World& TheWorld() {
  static World* w = new World();  // never destroyed: libFuzzer exits hard
  return *w;
}

class DiscardReply : public kqd::IoctlReply {
 public:
  void ReplyOk(int, const void*, size_t) override {}
  void ReplyError(int) override {}
  void OnInterrupt(std::function<void()>) override {}
};

uint64_t U64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  constexpr size_t kRecord = 1 + 64;
  const size_t records = std::min<size_t>(size / kRecord, 32);
  // The rest of the input fills the read arena (zeroes if short).
  memset(w.in_arena, 0, kArena);
  const size_t rest = size - records * kRecord;
  memcpy(w.in_arena, data + records * kRecord, std::min(rest, kArena));

  kqd::Caller caller;
  caller.tid = static_cast<pid_t>(syscall(SYS_gettid));
  caller.uid = geteuid();
  caller.gid = getegid();
  uint64_t handle = 0;
  if (w.device.Open(caller, &handle) != 0) return 0;

  for (size_t r = 0; r < records; r++) {
    const uint8_t op = data[r * kRecord];
    const uint8_t* rec = data + r * kRecord + 1;
    const bool wrong_size = op & 8;
    uint32_t cmd;
    uint8_t in[64];
    memcpy(in, rec, sizeof in);
    size_t in_size = 0;
    switch (op % 5) {
      case 0: {
        cmd = KQ_IOC_KEVENT;
        kq_kevent_args a;
        memcpy(&a, rec, sizeof a);
        // Pointers into the arenas, at any offset; counts as they come.
        a.changelist = reinterpret_cast<uint64_t>(w.in_arena) + U64(rec) % kArena;
        a.eventlist = reinterpret_cast<uint64_t>(w.out_arena) + U64(rec + 16) % kArena;
        // Mostly small counts, sometimes raw ones.
        if (!(rec[60] & 1)) a.nchanges %= 8;
        if (!(rec[60] & 2)) a.nevents %= 8;
        // Waiting calls are parked and answered when the kqueue closes; a
        // zero timeout mostly, so inputs also reach collection.
        if (!(rec[60] & 4)) {
          a.flags |= KQ_KEVENT_TIMEOUT;
          a.timeout_sec = 0;
          if (!(rec[60] & 8)) a.timeout_nsec = 0;
        }
        memcpy(in, &a, sizeof a);
        in_size = sizeof a;
        break;
      }
      case 1:
        cmd = KQ_IOC_VERSION;
        in_size = 0;
        break;
      case 2:
      case 3: {
        cmd = op % 5 == 2 ? KFILTER_BYNAME : KFILTER_BYFILTER;
        kfilter_mapping m;
        memcpy(&m, rec, sizeof m);
        uint8_t* base = cmd == KFILTER_BYNAME ? w.in_arena : w.out_arena;
        m.name = reinterpret_cast<char*>(base + U64(rec) % kArena);
        memcpy(in, &m, sizeof m);
        in_size = sizeof m;
        break;
      }
      default:
        memcpy(&cmd, rec, sizeof cmd);
        in_size = rec[4] % sizeof in;
        // A raw command must not make the daemon write through a pointer
        // we do not control: only known commands carry pointers, and those
        // are built above. Anything else is answered without memory access.
        if (cmd == KQ_IOC_KEVENT || cmd == KFILTER_BYNAME || cmd == KFILTER_BYFILTER) cmd ^= 1;
        // A local attach names our spare instance, or (rec[6] odd) no epoll
        // instance at all: the fuzzer's stdin.
        if (cmd == KQ_IOC_LOCAL_ATTACH) {
          const int32_t fd = (rec[6] & 1) ? 0 : w.epoll_fd;
          memcpy(in, &fd, sizeof fd);
        }
        break;
    }
    if (wrong_size) in_size = (in_size + 1 + rec[5] % 8) % sizeof in;
    w.device.Ioctl(handle, caller, cmd, reinterpret_cast<uint64_t>(w.out_arena),
                   in_size > 0 ? in : nullptr, in_size, std::make_unique<DiscardReply>());
  }
  w.device.Release(handle);
  if (w.device.open_kqueues() != 0) {
    fprintf(stderr, "ioctl_fuzzer: a kqueue outlived its release\n");
    abort();
  }
  return 0;
}
