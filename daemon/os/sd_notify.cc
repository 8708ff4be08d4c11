#include "daemon/os/sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "daemon/util/scoped_fd.h"

namespace kqd {

int SdNotify(const std::string& state) {
  const char* name = getenv("NOTIFY_SOCKET");
  if (name == nullptr || name[0] == '\0') return 1;
  size_t len = strlen(name);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // "@x" is the abstract name "\0x"; anything else must be an absolute path.
  if ((name[0] != '/' && name[0] != '@') || len >= sizeof addr.sun_path) return EINVAL;
  memcpy(addr.sun_path, name, len);
  if (name[0] == '@') addr.sun_path[0] = '\0';
  socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len +
                                               (name[0] == '@' ? 0 : 1));
  ScopedFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno;
  ssize_t n = sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                     reinterpret_cast<const sockaddr*>(&addr), addr_len);
  if (n < 0) return errno;
  return static_cast<size_t>(n) == state.size() ? 0 : EMSGSIZE;
}

}  // namespace kqd
