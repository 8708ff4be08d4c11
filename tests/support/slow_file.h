// SlowFile: a one-file FUSE filesystem, for tests, whose reads are held
// until the test releases them — a page "backed by a slow filesystem". The
// file is mounted over a fresh regular file (readable by every user), is
// 1 MiB long, and reads as zeros once released.
#ifndef KQUEUED_TESTS_SUPPORT_SLOW_FILE_H_
#define KQUEUED_TESTS_SUPPORT_SLOW_FILE_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct fuse_session;
struct fuse_req;

namespace kqd {
namespace testing {

class SlowFile {
 public:
  static constexpr size_t kSize = 1 << 20;

  // Mounts the file at `path` (created if absent); null with *error if
  // that fails (needs root).
  static std::unique_ptr<SlowFile> Mount(const std::string& path, std::string* error);
  // Releases held reads, unmounts, and removes nothing else.
  ~SlowFile();
  SlowFile(const SlowFile&) = delete;
  SlowFile& operator=(const SlowFile&) = delete;

  const std::string& path() const { return path_; }
  // Waits up to `ms` until at least one read has arrived (and is held).
  bool WaitForRead(int ms);
  // Answers every held read (zeros), and every later read at once.
  void ReleaseReads();

  // libfuse callbacks (the session's userdata is this object).
  static void OnRead(fuse_req* req, size_t size);

 private:
  SlowFile() = default;

  std::string path_;
  fuse_session* session_ = nullptr;
  std::thread loop_;

  std::mutex mu_;
  std::condition_variable read_arrived_;
  std::vector<std::pair<fuse_req*, size_t>> held_;  // guarded by mu_
  int reads_ = 0;                                   // guarded by mu_
  bool released_ = false;                           // guarded by mu_
};

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_SLOW_FILE_H_
