#include "daemon/transport/fuse_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>

#include "daemon/transport/fuse_api.h"
#include "daemon/transport/fuse_request_dispatch.h"
#include "daemon/transport/mount_point.h"
#include "daemon/transport/serving_session.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

namespace {

// The kernel sends INIT as soon as mount(2) returns; this only guards
// against a kernel that never does.
constexpr std::chrono::milliseconds kInitTimeout(5000);

// The attributes never change, so the kernel may cache them for long.
constexpr double kAttrTimeoutSeconds = 3600.0;

// The filesystem has one inode, the root, and it is the device file.
void FillRootAttr(struct stat* st) {
  // Taken once, so every getattr shows the same times.
  static const time_t start_time = time(nullptr);
  memset(st, 0, sizeof(*st));
  st->st_ino = FUSE_ROOT_ID;
  // Everyone may open it (as /dev/kqueue on BSD); with default_permissions
  // off the kernel does not check the mode anyway, this is what stat shows.
  st->st_mode = S_IFREG | 0666;
  st->st_nlink = 1;
  st->st_uid = 0;
  st->st_gid = 0;
  st->st_blksize = 4096;
  st->st_atime = st->st_mtime = st->st_ctime = start_time;
}

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)fi;
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  FillRootAttr(&st);
  fuse_reply_attr(req, &st, kAttrTimeoutSeconds);
}

// truncate/utimes/open(O_TRUNC) are accepted and change nothing, as on a
// character device; chmod/chown are refused because they would not stick.
void OnSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               fuse_file_info* fi) {
  (void)attr;
  (void)fi;
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    fuse_reply_err(req, EPERM);
    return;
  }
  struct stat st;
  FillRootAttr(&st);
  fuse_reply_attr(req, &st, kAttrTimeoutSeconds);
}

// The root is not a directory, so the kernel has no reason to look names
// up in it; answer as a file would.
void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  (void)parent;
  (void)name;
  fuse_reply_err(req, ENOTDIR);
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  (void)conn;
  RequestDispatcher::OnInit(userdata);
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)ino;
  RequestDispatcher::OnOpen(req, fi);
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)ino;
  RequestDispatcher::OnRelease(req, fi);
}

void OnFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)ino;
  RequestDispatcher::OnFlush(req, fi);
}

void OnIoctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void* arg,
             fuse_file_info* fi, unsigned flags, const void* in_buf,
             size_t in_bufsz, size_t out_bufsz) {
  (void)ino;
  RequestDispatcher::OnIoctl(req, cmd, arg, fi, flags, in_buf, in_bufsz,
                             out_bufsz);
}

void OnPoll(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi,
            fuse_pollhandle* ph) {
  (void)ino;
  RequestDispatcher::OnPoll(req, fi, ph);
}

// read/write and everything else stay unset: libfuse answers ENOSYS.
const fuse_lowlevel_ops& FileOps() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o;
    memset(&o, 0, sizeof(o));
    o.init = OnInit;
    o.lookup = OnLookup;
    o.getattr = OnGetattr;
    o.setattr = OnSetattr;
    o.open = OnOpen;
    o.release = OnRelease;
    o.flush = OnFlush;
    o.ioctl = OnIoctl;
    o.poll = OnPoll;
    return o;
  }();
  return ops;
}

// A libfuse session with our operations and no command-line options (the
// mount options are ours, see MountPoint::Mount).
fuse_session* NewSession(void* userdata) {
  char program[] = "kqueued";
  char* argv[] = {program, nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(1, argv);
  fuse_session* se =
      fuse_session_new(&args, &FileOps(), sizeof(fuse_lowlevel_ops), userdata);
  fuse_opt_free_args(&args);  // frees only what option parsing allocated
  return se;
}

}  // namespace

std::unique_ptr<FuseTransport> FuseTransport::Start(const std::string& path,
                                                    DeviceHandler* handler,
                                                    std::string* error) {
  std::unique_ptr<MountPoint> mount = MountPoint::Claim(path, error);
  if (!mount) return nullptr;
  std::unique_ptr<ServingSession> session =
      ServingSession::Create(handler, error);
  if (!session) return nullptr;

  fuse_session* se = NewSession(session->userdata());
  if (se == nullptr) {
    *error = "fuse_session_new failed";
    return nullptr;
  }
  ScopedFd fuse_fd(open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!fuse_fd.valid()) {
    *error = std::string("cannot open /dev/fuse: ") + strerror(errno);
    fuse_session_destroy(se);
    return nullptr;
  }
  if (!mount->Mount(fuse_fd.get(), error)) {
    fuse_session_destroy(se);
    return nullptr;
  }
  // libfuse's documented way to adopt a connection opened by someone else:
  // "/dev/fd/N" as the mount point makes the session use fd N.
  const std::string adopt = "/dev/fd/" + std::to_string(fuse_fd.get());
  if (fuse_session_mount(se, adopt.c_str()) != 0) {
    *error = "libfuse did not adopt the FUSE connection";
    fuse_session_destroy(se);
    fuse_fd.reset();  // aborts the connection, so the unmount needs no reply
    mount->Unmount();
    return nullptr;
  }
  fuse_fd.release();  // the session closes it now

  if (!session->Start(se, kInitTimeout, error)) {
    *error = "serving " + mount->path() + ": " + *error;
    session->Close();
    mount->Unmount();
    return nullptr;
  }
  return std::unique_ptr<FuseTransport>(
      new FuseTransport(std::move(mount), std::move(session)));
}

FuseTransport::FuseTransport(std::unique_ptr<MountPoint> mount,
                             std::unique_ptr<ServingSession> session)
    : path_(mount->path()),
      session_(std::move(session)),
      mount_(std::move(mount)) {}

FuseTransport::~FuseTransport() { Stop(); }

void FuseTransport::Stop() {
  MutexLock lock(stop_mu_);
  if (!session_) return;
  session_->StopServing();
  // Close the connection before unmounting: the kernel then fails anything
  // still aimed at the file at once (ENOTCONN), and detaching the mount
  // cannot wait on a server that no longer reads.
  session_->Close();
  mount_->Unmount();
  session_.reset();
  mount_.reset();  // drops the placeholder's lock; the file itself stays
}

bool FuseTransport::running() const {
  MutexLock lock(stop_mu_);
  return session_ && session_->running();
}

}  // namespace kqd
