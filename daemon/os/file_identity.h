// FileIdentity: which file an open descriptor names, as far as statx and
// F_GETFL can tell (inode, type, access mode — not the open file itself),
// for recognising a client's fd number reused for another file where no
// finer check exists. The fd filters compare the open file itself, with
// kcmp against their epoll item, wherever they have one (fd_watch.h).
#ifndef KQUEUED_DAEMON_OS_FILE_IDENTITY_H_
#define KQUEUED_DAEMON_OS_FILE_IDENTITY_H_

#include <sys/types.h>

struct statx;

namespace kqd {

// Two opens of one inode with the same access mode cannot be told apart
// from here (that would need the old file, which the daemon must not
// hold): a number reused that way counts as the same file.
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  dev_t rdev = 0;
  mode_t type = 0;   // st_mode & S_IFMT
  int accmode = 0;   // O_RDONLY / O_WRONLY / O_RDWR

  bool operator==(const FileIdentity& o) const {
    return dev == o.dev && ino == o.ino && rdev == o.rdev && type == o.type &&
           accmode == o.accmode;
  }
  bool operator!=(const FileIdentity& o) const { return !(*this == o); }
};

// Whether `fd` is an anonymous pipe made by pipe(2) (it lives on pipefs),
// not a FIFO on a file system: NetBSD builds the two differently (pipes
// in sys_pipe.c, FIFOs on sockets in fifofs) and their kqueue filters
// answer differently.
bool IsAnonymousPipe(int fd);

// Fills *out for open descriptor `fd` (statx without syncing, so never a
// request to a FUSE server, + F_GETFL). Returns 0 or an errno.
int ReadIdentity(int fd, FileIdentity* out);
// The same from a statx of `fd` already read (STATX_TYPE | STATX_INO, as
// ReadIdentity's): only F_GETFL is asked. Returns 0 or an errno.
int IdentityFromStatx(int fd, const struct statx& stx, FileIdentity* out);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_FILE_IDENTITY_H_
