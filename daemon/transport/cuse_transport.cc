#include "daemon/transport/cuse_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "daemon/transport/fuse_api.h"
#include "daemon/transport/fuse_request_dispatch.h"
#include "daemon/transport/serving_session.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

namespace {

constexpr std::chrono::milliseconds kInitTimeout(5000);
// devtmpfs creates the node while the kernel handles our INIT reply; udev
// (if /dev is not devtmpfs) takes a few milliseconds more.
constexpr std::chrono::milliseconds kNodeTimeout(2000);
constexpr std::chrono::milliseconds kNodePollInterval(5);
// Device names end up in /dev and in sysfs; CUSE's limit on its dev_info
// block is far larger, this only keeps names sane.
constexpr size_t kMaxNameLength = 64;

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  if (name == "." || name == "..") return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void OnInitDone(void* userdata) { RequestDispatcher::OnInit(userdata); }

void OnOpen(fuse_req_t req, fuse_file_info* fi) {
  RequestDispatcher::OnOpen(req, fi);
}

void OnRelease(fuse_req_t req, fuse_file_info* fi) {
  RequestDispatcher::OnRelease(req, fi);
}

void OnFlush(fuse_req_t req, fuse_file_info* fi) {
  RequestDispatcher::OnFlush(req, fi);
}

void OnIoctl(fuse_req_t req, int cmd, void* arg, fuse_file_info* fi,
             unsigned flags, const void* in_buf, size_t in_bufsz,
             size_t out_bufsz) {
  // CUSE passes the command as int; the bits are the same.
  RequestDispatcher::OnIoctl(req, static_cast<uint32_t>(cmd), arg, fi, flags,
                             in_buf, in_bufsz, out_bufsz);
}

void OnPoll(fuse_req_t req, fuse_file_info* fi, fuse_pollhandle* ph) {
  RequestDispatcher::OnPoll(req, fi, ph);
}

// read/write stay unset: libfuse answers ENOSYS.
const cuse_lowlevel_ops& CuseOps() {
  static const cuse_lowlevel_ops ops = [] {
    cuse_lowlevel_ops o;
    memset(&o, 0, sizeof(o));
    o.init_done = OnInitDone;  // after the kernel has the device
    o.open = OnOpen;
    o.release = OnRelease;
    o.flush = OnFlush;
    o.ioctl = OnIoctl;
    o.poll = OnPoll;
    return o;
  }();
  return ops;
}

}  // namespace

std::unique_ptr<CuseTransport> CuseTransport::Start(const std::string& name,
                                                    DeviceHandler* handler,
                                                    std::string* error,
                                                    mode_t mode) {
  if (!ValidName(name)) {
    *error = "invalid CUSE device name \"" + name +
             "\" (letters, digits, '.', '_', '-')";
    return nullptr;
  }
  const std::string path = "/dev/" + name;
  struct stat st;
  // The kernel would refuse a name another CUSE device uses, and devtmpfs
  // cannot create a node over an existing file: say which it is up front.
  if (lstat(path.c_str(), &st) == 0) {
    *error = path + " already exists" +
             (S_ISCHR(st.st_mode) ? " (another kqueued serving it?)"
                                  : S_ISREG(st.st_mode)
                                        ? " (a FUSE placeholder file? remove "
                                          "it to use CUSE)"
                                        : "");
    return nullptr;
  }

  std::unique_ptr<ServingSession> session =
      ServingSession::Create(handler, error);
  if (!session) return nullptr;

  const std::string dev_name = "DEVNAME=" + name;
  const char* dev_info[] = {dev_name.c_str()};
  struct cuse_info ci;
  memset(&ci, 0, sizeof(ci));
  ci.dev_info_argc = 1;
  ci.dev_info_argv = dev_info;
  // Restricted ioctls: see the header. dev_major/minor 0: dynamic.
  ci.flags = 0;

  char program[] = "kqueued";
  char* argv[] = {program, nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(1, argv);
  fuse_session* se =
      cuse_lowlevel_new(&args, &ci, &CuseOps(), session->userdata());
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    *error = "cuse_lowlevel_new failed";
    return nullptr;
  }

  ScopedFd cuse_fd(open(kControlDevice, O_RDWR | O_CLOEXEC));
  if (!cuse_fd.valid()) {
    int err = errno;
    *error = std::string("cannot open ") + kControlDevice + ": " +
             strerror(err);
    if (err == ENOENT || err == ENODEV) *error += " (modprobe cuse?)";
    fuse_session_destroy(se);
    return nullptr;
  }
  // As for FUSE: "/dev/fd/N" makes libfuse use our already-open fd.
  const std::string adopt = "/dev/fd/" + std::to_string(cuse_fd.get());
  if (fuse_session_mount(se, adopt.c_str()) != 0) {
    *error = "libfuse did not adopt the CUSE connection";
    fuse_session_destroy(se);
    return nullptr;
  }
  cuse_fd.release();  // the session closes it now

  if (!session->Start(se, kInitTimeout, error)) {
    *error = "creating " + path + ": " + *error;
    return nullptr;  // ~ServingSession closes the connection
  }

  // A refused name (in use by another CUSE device) makes the kernel abort
  // the connection right after INIT; a created device has its node.
  const auto deadline = std::chrono::steady_clock::now() + kNodeTimeout;
  for (;;) {
    if (!session->running()) {
      *error = "the kernel refused CUSE device " + name + " (name in use?)";
      return nullptr;
    }
    if (stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      *error = path + " did not appear (is devtmpfs mounted on /dev?)";
      return nullptr;
    }
    std::this_thread::sleep_for(kNodePollInterval);
  }
  if (chmod(path.c_str(), mode) != 0) {
    *error = "chmod " + path + ": " + strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<CuseTransport>(
      new CuseTransport(path, std::move(session)));
}

CuseTransport::CuseTransport(std::string path,
                             std::unique_ptr<ServingSession> session)
    : path_(std::move(path)), session_(std::move(session)) {}

CuseTransport::~CuseTransport() { Stop(); }

void CuseTransport::Stop() {
  MutexLock lock(stop_mu_);
  if (!session_) return;
  session_->StopServing();
  session_->Close();  // closing /dev/cuse removes the device and its node
  session_.reset();
}

bool CuseTransport::running() const {
  MutexLock lock(stop_mu_);
  return session_ && session_->running();
}

}  // namespace kqd
