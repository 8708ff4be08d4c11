#include "daemon/transport/transport.h"

#include <unistd.h>

#include "daemon/transport/cuse_transport.h"
#include "daemon/transport/fuse_transport.h"

namespace kqd {

namespace {

constexpr char kDevPrefix[] = "/dev/";

}  // namespace

bool ParseTransportKind(const std::string& text, TransportKind* kind) {
  if (text == "auto") {
    *kind = TransportKind::kAuto;
  } else if (text == "cuse") {
    *kind = TransportKind::kCuse;
  } else if (text == "fuse") {
    *kind = TransportKind::kFuse;
  } else {
    return false;
  }
  return true;
}

const char* TransportKindName(TransportKind kind) {
  switch (kind) {
    case TransportKind::kAuto:
      return "auto";
    case TransportKind::kCuse:
      return "cuse";
    case TransportKind::kFuse:
      return "fuse";
  }
  return "?";
}

std::unique_ptr<Transport> StartTransport(TransportKind kind,
                                          const std::string& device_path,
                                          DeviceHandler* handler,
                                          std::string* error) {
  const std::string prefix(kDevPrefix);
  const bool under_dev = device_path.compare(0, prefix.size(), prefix) == 0 &&
                         device_path.size() > prefix.size();
  if (kind == TransportKind::kAuto) {
    // CUSE gives a real character device; FUSE is the fallback for kernels
    // without it. Only paths directly in /dev can be CUSE nodes.
    bool cuse = under_dev && access(CuseTransport::kControlDevice, F_OK) == 0;
    kind = cuse ? TransportKind::kCuse : TransportKind::kFuse;
  }
  if (kind == TransportKind::kCuse) {
    if (!under_dev) {
      *error = "a CUSE device must be /dev/NAME, not " + device_path;
      return nullptr;
    }
    return CuseTransport::Start(device_path.substr(prefix.size()), handler,
                                error);
  }
  return FuseTransport::Start(device_path, handler, error);
}

}  // namespace kqd
