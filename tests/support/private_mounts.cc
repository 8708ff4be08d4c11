#include "tests/support/private_mounts.h"

#include <sys/mount.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kqd {
namespace testing {
namespace {

// mountinfo escapes blanks in paths as octal (\040); undo it.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

int DetachFuseMounts() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return -1;
  // Field 5 is the mount point; the file system type follows the " - ".
  std::vector<std::string> targets;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (!(fields >> id >> parent >> dev >> root >> point)) continue;
    const size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream tail(line.substr(sep + 3));
    std::string type;
    if (!(tail >> type)) continue;
    if (type == "fuse" || type.rfind("fuse.", 0) == 0 || type == "fuseblk") {
      targets.push_back(Unescape(point));
    }
  }
  int detached = 0;
  // Deepest first is not needed with MNT_DETACH, but later lines may sit on
  // earlier ones: detach in reverse order of appearance.
  for (auto it = targets.rbegin(); it != targets.rend(); ++it) {
    if (umount2(it->c_str(), MNT_DETACH) == 0) detached++;
  }
  return detached;
}

}  // namespace testing
}  // namespace kqd
