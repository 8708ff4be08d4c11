#include "tests/support/slow_file.h"

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

namespace kqd {
namespace testing {
namespace {

SlowFile* Self(fuse_req_t req) { return static_cast<SlowFile*>(fuse_req_userdata(req)); }

void FillAttr(struct stat* st) {
  memset(st, 0, sizeof *st);
  st->st_ino = FUSE_ROOT_ID;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = SlowFile::kSize;
  st->st_blksize = 4096;
}

void OnGetattr(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  struct stat st;
  FillAttr(&st);
  fuse_reply_attr(req, &st, 3600);
}

void OnOpen(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  fi->direct_io = 0;  // through the page cache: the file can be mmapped
  fi->keep_cache = 0;
  fuse_reply_open(req, fi);
}

void OnReadOp(fuse_req_t req, fuse_ino_t, size_t size, off_t, fuse_file_info*) {
  SlowFile::OnRead(req, size);
}

void ReplyZeros(fuse_req_t req, size_t size) {
  std::vector<char> zeros(size, 0);
  fuse_reply_buf(req, zeros.data(), zeros.size());
}

}  // namespace

void SlowFile::OnRead(fuse_req_t req, size_t size) {
  SlowFile* self = Self(req);
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->reads_++;
    self->read_arrived_.notify_all();
    if (!self->released_) {
      self->held_.emplace_back(req, size);
      return;
    }
  }
  ReplyZeros(req, size);
}

std::unique_ptr<SlowFile> SlowFile::Mount(const std::string& path, std::string* error) {
  std::unique_ptr<SlowFile> f(new SlowFile());
  f->path_ = path;
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "create " + path + ": " + strerror(errno);
    return nullptr;
  }
  close(fd);
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o;
    memset(&o, 0, sizeof o);
    o.getattr = OnGetattr;
    o.open = OnOpen;
    o.read = OnReadOp;
    return o;
  }();
  char program[] = "slow_file";
  char opt[] = "-o";
  char allow[] = "allow_other";
  char* argv[] = {program, opt, allow, nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  f->session_ = fuse_session_new(&args, &ops, sizeof ops, f.get());
  fuse_opt_free_args(&args);
  if (f->session_ == nullptr) {
    *error = "fuse_session_new failed";
    return nullptr;
  }
  if (fuse_session_mount(f->session_, path.c_str()) != 0) {
    fuse_session_destroy(f->session_);
    f->session_ = nullptr;
    *error = "fuse_session_mount " + path + " failed";
    return nullptr;
  }
  fuse_session* se = f->session_;
  f->loop_ = std::thread([se] { fuse_session_loop(se); });
  // The kernel knows the root's size only after a getattr (until then it is
  // 0, and a fault in a mapping of it is past the end): ask once now, the
  // answer is cached for an hour.
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || st.st_size != static_cast<off_t>(kSize)) {
    *error = "stat " + path + " does not show the FUSE file";
    return nullptr;  // the destructor unmounts
  }
  return f;
}

bool SlowFile::WaitForRead(int ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return read_arrived_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return reads_ > 0; });
}

void SlowFile::ReleaseReads() {
  std::vector<std::pair<fuse_req*, size_t>> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    held.swap(held_);
  }
  for (auto& [req, size] : held) ReplyZeros(req, size);
}

SlowFile::~SlowFile() {
  ReleaseReads();
  if (session_ == nullptr) return;
  fuse_session_exit(session_);
  // Unmounting ends the loop's read with ENODEV.
  fuse_session_unmount(session_);
  if (loop_.joinable()) loop_.join();
  fuse_session_destroy(session_);
}

}  // namespace testing
}  // namespace kqd
