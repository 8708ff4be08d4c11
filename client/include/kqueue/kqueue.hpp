// kqueue.hpp — a small C++17 layer over <sys/event.h>. Header-only; link
// with libkqueue (or depend on //client:kqueue).
//
//   kq::Queue q = kq::Queue::Open();                 // throws std::system_error
//   struct kevent change = kq::Event(fd, EVFILT_READ, EV_ADD);
//   struct kevent events[8];
//   int n = q.kevent(kq::Span<const struct kevent>(&change, 1), events,
//                    std::chrono::milliseconds(100));
//
// Every call that can fail has two forms: one throws std::system_error (with
// the errno in std::generic_category()), the other takes a std::error_code&
// and never throws.
#ifndef KQUEUED_CLIENT_KQUEUE_KQUEUE_HPP_
#define KQUEUED_CLIENT_KQUEUE_KQUEUE_HPP_

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/event.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace kq {

// A (pointer, size) view of contiguous elements: C++17 has no std::span.
// Builds implicitly from arrays, std::array and std::vector so calls read
// naturally; Span<const T> also from their const forms.
template <typename T>
class Span {
 public:
  constexpr Span() noexcept = default;
  constexpr Span(T* data, size_t size) noexcept : data_(data), size_(size) {}
  template <size_t N>
  constexpr Span(T (&array)[N]) noexcept : data_(array), size_(N) {}
  template <typename U, size_t N,
            typename = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr Span(std::array<U, N>& array) noexcept : data_(array.data()), size_(N) {}
  template <typename U, size_t N,
            typename = std::enable_if_t<std::is_convertible_v<const U (*)[], T (*)[]>>>
  constexpr Span(const std::array<U, N>& array) noexcept : data_(array.data()), size_(N) {}
  template <typename U, typename A,
            typename = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  Span(std::vector<U, A>& v) noexcept : data_(v.data()), size_(v.size()) {}
  template <typename U, typename A,
            typename = std::enable_if_t<std::is_convertible_v<const U (*)[], T (*)[]>>>
  Span(const std::vector<U, A>& v) noexcept : data_(v.data()), size_(v.size()) {}
  // Span<T> → Span<const T>.
  template <typename U,
            typename = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr Span(const Span<U>& other) noexcept : data_(other.data()), size_(other.size()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr T& operator[](size_t i) const noexcept { return data_[i]; }
  constexpr T* begin() const noexcept { return data_; }
  constexpr T* end() const noexcept { return data_ + size_; }
  // The first n elements (n is clamped to size()).
  constexpr Span first(size_t n) const noexcept { return Span(data_, n < size_ ? n : size_); }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

using Changes = Span<const struct kevent>;
using Events = Span<struct kevent>;

// EV_SET as an expression; the padding after fflags is zeroed too, so
// events compare equal with memcmp.
inline struct kevent Event(uintptr_t ident, uint32_t filter, uint32_t flags,
                           uint32_t fflags = 0, int64_t data = 0,
                           void* udata = nullptr) noexcept {
  struct kevent ev;
  std::memset(&ev, 0, sizeof ev);  // `ev{}` need not clear padding.
  EV_SET(&ev, ident, filter, flags, fflags, data, udata);
  return ev;
}

namespace internal {

inline std::error_code LastError() noexcept {
  return std::error_code(errno, std::generic_category());
}

inline void ThrowIf(const std::error_code& ec, const char* what) {
  if (ec) throw std::system_error(ec, what);
}

}  // namespace internal

// An owned kqueue descriptor, closed on destruction. Move-only: a copy would
// close the queue twice.
class Queue {
 public:
  // Not a queue (fd() == -1); assign one later.
  Queue() noexcept = default;
  // Takes ownership of an existing kqueue descriptor.
  explicit Queue(int fd) noexcept : fd_(fd) {}
  ~Queue() { reset(); }

  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  Queue(Queue&& other) noexcept : fd_(other.release()) {}
  Queue& operator=(Queue&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }

  // A new kqueue via kqueue1(flags). Unlike kqueue(), the default is
  // close-on-exec: a C++ program rarely means to leak it into exec'd children.
  static Queue Open(int flags, std::error_code& ec) noexcept {
    int fd = ::kqueue1(flags);
    ec = fd < 0 ? internal::LastError() : std::error_code();
    return Queue(fd);
  }
  static Queue Open(int flags = O_CLOEXEC) {
    std::error_code ec;
    Queue q = Open(flags, ec);
    internal::ThrowIf(ec, "kqueue1");
    return q;
  }

  int fd() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership: the caller must close the returned descriptor.
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

  // Closes the current queue (if any) and owns fd instead.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

  // kevent(2): applies `changes`, then collects up to events.size() events,
  // waiting at most `timeout` (std::nullopt: forever; zero: poll). Returns
  // the number of events written, or -1 with `ec` set (EINTR included: a
  // signal interrupts the wait, as on the BSDs). A negative timeout is
  // EINVAL.
  int kevent(Changes changes, Events events, std::optional<std::chrono::nanoseconds> timeout,
             std::error_code& ec) const noexcept {
    struct timespec ts{};
    const struct timespec* tsp = nullptr;
    if (timeout) {
      if (timeout->count() < 0) {
        ec = std::make_error_code(std::errc::invalid_argument);
        return -1;
      }
      const int64_t ns = timeout->count();
      ts.tv_sec = static_cast<time_t>(ns / 1000000000);
      ts.tv_nsec = static_cast<long>(ns % 1000000000);
      tsp = &ts;
    }
    int n = ::kevent(fd_, changes.data(), changes.size(), events.data(), events.size(), tsp);
    ec = n < 0 ? internal::LastError() : std::error_code();
    return n;
  }
  int kevent(Changes changes, Events events,
             std::optional<std::chrono::nanoseconds> timeout = std::nullopt) const {
    std::error_code ec;
    int n = kevent(changes, events, timeout, ec);
    internal::ThrowIf(ec, "kevent");
    return n;
  }

  // Applies changes without collecting events (nevents == 0, so a failed
  // change is reported as an error rather than as an EV_ERROR entry).
  void Apply(Changes changes, std::error_code& ec) const noexcept {
    kevent(changes, Events(), std::chrono::nanoseconds(0), ec);
  }
  void Apply(Changes changes) const { kevent(changes, Events(), std::chrono::nanoseconds(0)); }

 private:
  int fd_ = -1;
};

// NetBSD's KFILTER_BYNAME: the number of the filter called `name` on the
// kqueue `kq`. ENOENT for an unknown name, ENAMETOOLONG for a name of
// KFILTER_MAXNAME bytes or more.
inline uint32_t FilterByName(int kq, std::string_view name, std::error_code& ec) noexcept {
  if (name.size() >= KFILTER_MAXNAME) {
    ec = std::make_error_code(std::errc::filename_too_long);
    return 0;
  }
  // The ioctl wants a NUL-terminated string; a string_view need not be one.
  char buf[KFILTER_MAXNAME];
  name.copy(buf, name.size());
  buf[name.size()] = '\0';
  struct kfilter_mapping m{};
  m.name = buf;
  m.len = sizeof buf;
  if (::ioctl(kq, KFILTER_BYNAME, &m) < 0) {
    ec = internal::LastError();
    return 0;
  }
  ec.clear();
  return m.filter;
}
inline uint32_t FilterByName(int kq, std::string_view name) {
  std::error_code ec;
  uint32_t filter = FilterByName(kq, name, ec);
  internal::ThrowIf(ec, "KFILTER_BYNAME");
  return filter;
}
inline uint32_t FilterByName(const Queue& q, std::string_view name, std::error_code& ec) noexcept {
  return FilterByName(q.fd(), name, ec);
}
inline uint32_t FilterByName(const Queue& q, std::string_view name) {
  return FilterByName(q.fd(), name);
}

// NetBSD's KFILTER_BYFILTER: the name of filter number `filter` ("" with
// ENOENT if there is none).
inline std::string FilterName(int kq, uint32_t filter, std::error_code& ec) {
  // Every name fits: the daemon refuses names of KFILTER_MAXNAME or more.
  char buf[KFILTER_MAXNAME];
  struct kfilter_mapping m{};
  m.name = buf;
  m.len = sizeof buf;
  m.filter = filter;
  if (::ioctl(kq, KFILTER_BYFILTER, &m) < 0) {
    ec = internal::LastError();
    return std::string();
  }
  ec.clear();
  buf[sizeof buf - 1] = '\0';
  return std::string(buf);
}
inline std::string FilterName(int kq, uint32_t filter) {
  std::error_code ec;
  std::string name = FilterName(kq, filter, ec);
  internal::ThrowIf(ec, "KFILTER_BYFILTER");
  return name;
}
inline std::string FilterName(const Queue& q, uint32_t filter, std::error_code& ec) {
  return FilterName(q.fd(), filter, ec);
}
inline std::string FilterName(const Queue& q, uint32_t filter) {
  return FilterName(q.fd(), filter);
}

}  // namespace kq

#endif  // KQUEUED_CLIENT_KQUEUE_KQUEUE_HPP_
