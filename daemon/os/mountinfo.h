// /proc/<pid>/mountinfo: one parser for the lines of a mount table, used by
// EVFILT_FS/EVFILT_VNODE (which watch tables) and by the FUSE transport
// (which checks its own mount point).
#ifndef KQUEUED_DAEMON_OS_MOUNTINFO_H_
#define KQUEUED_DAEMON_OS_MOUNTINFO_H_

#include <cstdint>
#include <string>

namespace kqd {

// The leading fields of one line: "id parent major:minor root mount-point
// options ...". Paths are unescaped.
struct MountinfoLine {
  uint64_t id = 0;
  uint64_t parent = 0;
  std::string dev;          // "major:minor"
  std::string root;         // the mount's root within its file system
  std::string mount_point;  // where it is mounted
};

// Parses one line (without its newline); false if it is malformed.
bool ParseMountinfoLine(const std::string& line, MountinfoLine* out);

// Undoes mountinfo's octal escapes ("\040" for a space, and \011 \012 \134).
std::string UnescapeMountinfoPath(const std::string& field);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_MOUNTINFO_H_
