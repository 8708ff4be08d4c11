#include "daemon/os/mountinfo.h"

#include <sstream>

namespace kqd {

bool ParseMountinfoLine(const std::string& line, MountinfoLine* out) {
  // Names have their blanks escaped (\040), so the fields split on spaces.
  std::istringstream fields(line);
  std::string root, mount_point;
  if (!(fields >> out->id >> out->parent >> out->dev >> root >> mount_point)) return false;
  out->root = UnescapeMountinfoPath(root);
  out->mount_point = UnescapeMountinfoPath(mount_point);
  return true;
}

std::string UnescapeMountinfoPath(const std::string& field) {
  std::string out;
  out.reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const char* p = field.c_str() + i + 1;
      if (p[0] >= '0' && p[0] <= '3' && p[1] >= '0' && p[1] <= '7' &&
          p[2] >= '0' && p[2] <= '7') {
        out.push_back(static_cast<char>((p[0] - '0') * 64 + (p[1] - '0') * 8 +
                                        (p[2] - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

}  // namespace kqd
