// End-to-end runs of the example programs in examples/c against the private
// daemon. Examples whose filters the daemon does not implement yet are
// skipped, with the daemon's answer as the reason.
#include <sys/event.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/client/client_test_support.h"

namespace kqd {
namespace client_test {
namespace {

using namespace std::chrono_literals;

// Whether the daemon watches sockets for `filter`; *why if not.
bool SocketFilterWorks(uint32_t filter, std::string* why) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    *why = strerror(errno);
    return false;
  }
  bool ok = DaemonAccepts(Ev(sv[0], filter, EV_ADD), why);
  close(sv[0]);
  close(sv[1]);
  return ok;
}

bool PipeReadWorks(std::string* why) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    *why = strerror(errno);
    return false;
  }
  bool ok = DaemonAccepts(Ev(fds[0], EVFILT_READ, EV_ADD), why);
  close(fds[0]);
  close(fds[1]);
  return ok;
}

// Whether KFILTER_BYNAME maps `name` to `number`, as it must before a test
// relies on the filter.
bool KnownByName(const char* name, uint32_t number) {
  int kq = kqueue1(O_CLOEXEC);
  if (kq < 0) return false;
  struct kfilter_mapping m = {const_cast<char*>(name), 0, 0};
  bool known = ioctl(kq, KFILTER_BYNAME, &m) == 0 && m.filter == number;
  close(kq);
  return known;
}

// A connected TCP client of 127.0.0.1:port with 10 s I/O timeouts, so a
// broken server fails the test instead of hanging it.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads exactly n bytes (or until EOF/error/timeout).
std::string ReadN(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    ssize_t r = read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += static_cast<size_t>(w);
  }
  return true;
}

// The port a just-started echo_server announces, or -1.
int StartEchoServer(Child* server) {
  std::string line;
  if (!server->ReadLine(&line, 10s)) return -1;
  int port = -1;
  if (sscanf(line.c_str(), "listening on port %d", &port) != 1) return -1;
  return port;
}

class ExamplesTest : public ClientTest {
 protected:
  void SetUp() override {
    ClientTest::SetUp();
    // A client that goes away while a server example writes to it must not
    // kill this test process.
    signal(SIGPIPE, SIG_IGN);
  }
};

TEST_F(ExamplesTest, EchoServerServesThreeClients) {
  std::string why;
  if (!SocketFilterWorks(EVFILT_READ, &why))
    GTEST_SKIP() << "EVFILT_READ on sockets is not available from the daemon: " << why;
  // The large transfer makes the server block on output and use
  // EVFILT_WRITE; without that filter, stay below the socket buffers.
  const bool big = SocketFilterWorks(EVFILT_WRITE, &why);

  Child server({kqd::testing::RunfilePath("examples/c/echo_server"), "--exit-after", "3", "0"});
  int port = StartEchoServer(&server);
  ASSERT_GT(port, 0) << server.ReadAll(1s);

  // All three connected at once, then served in turn.
  int clients[3];
  for (int& c : clients) {
    c = Connect(port);
    ASSERT_GE(c, 0) << strerror(errno);
  }
  for (int i = 0; i < 3; i++) {
    std::string message = "hello from client " + std::to_string(i) + "\n";
    if (i == 2 && big) message = std::string(4 << 20, 'z');
    // Write from a thread: a large echo comes back while it is being sent.
    bool wrote = false;
    std::thread writer([&] { wrote = WriteAll(clients[i], message); });
    std::string echoed = ReadN(clients[i], message.size());
    writer.join();
    EXPECT_TRUE(wrote);
    EXPECT_EQ(echoed.size(), message.size()) << "client " << i;
    EXPECT_TRUE(echoed == message) << "client " << i << " got different bytes back";
  }
  for (int c : clients) close(c);

  int status = 0;
  ASSERT_TRUE(server.Wait(&status, 10s)) << server.ReadAll(100ms);
  std::string output = server.ReadAll(1s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_NE(output.find("served 3 clients"), std::string::npos) << output;
}

TEST_F(ExamplesTest, EchoServerRefusesClientsOverTheLimit) {
  std::string why;
  if (!SocketFilterWorks(EVFILT_READ, &why))
    GTEST_SKIP() << "EVFILT_READ on sockets is not available from the daemon: " << why;
  Child server(
      {kqd::testing::RunfilePath("examples/c/echo_server"), "--max-clients", "1", "--exit-after", "1", "0"});
  int port = StartEchoServer(&server);
  ASSERT_GT(port, 0) << server.ReadAll(1s);

  int a = Connect(port);
  ASSERT_GE(a, 0);
  ASSERT_TRUE(WriteAll(a, "ping"));
  EXPECT_EQ(ReadN(a, 4), "ping");  // a is being served

  int b = Connect(port);
  ASSERT_GE(b, 0);
  char c;
  ssize_t r = read(b, &c, 1);  // accepted and closed at once: EOF or reset
  EXPECT_TRUE(r == 0 || (r < 0 && errno == ECONNRESET)) << r << " " << strerror(errno);
  close(b);

  ASSERT_TRUE(WriteAll(a, "still here"));
  EXPECT_EQ(ReadN(a, 10), "still here");
  close(a);
  int status = 0;
  ASSERT_TRUE(server.Wait(&status, 10s));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server.ReadAll(1s);
}

// Runs shared_queue and checks every event reached exactly one worker.
void RunSharedQueue(const std::vector<std::string>& extra, int events) {
  std::vector<std::string> argv = {kqd::testing::RunfilePath("examples/c/shared_queue"), "--workers", "4",
                                   "--events", std::to_string(events)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Child child(argv);
  std::string output = child.ReadAll(60s);
  int status = 0;
  ASSERT_TRUE(child.Wait(&status, 10s)) << output;
  std::printf("%s", output.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  std::string want = "events " + std::to_string(events) + " delivered " +
                     std::to_string(events) + " duplicates 0 missing 0\n";
  EXPECT_NE(output.find(want), std::string::npos) << output;
}

TEST_F(ExamplesTest, SharedQueueUserEventsReachOneWorkerEach) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  RunSharedQueue({"--mode", "user"}, 500);
}

TEST_F(ExamplesTest, SharedQueueWithDispatch) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  RunSharedQueue({"--mode", "user", "--dispatch"}, 200);
}

TEST_F(ExamplesTest, SharedQueuePipes) {
  std::string why;
  if (!PipeReadWorks(&why))
    GTEST_SKIP() << "EVFILT_READ on pipes is not available from the daemon: " << why;
  RunSharedQueue({"--mode", "pipe"}, 200);
}

TEST_F(ExamplesTest, FileWatchReportsWriteAndDelete) {
  std::string dir = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
  std::string path = dir + "/watched-file";
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  close(fd);

  // Skip unless the daemon knows the filter by name and accepts a knote.
  {
    if (!KnownByName("EVFILT_VNODE", EVFILT_VNODE))
      GTEST_SKIP() << "KFILTER_BYNAME does not know EVFILT_VNODE";
    int probe = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(probe, 0);
    std::string why;
    bool ok = DaemonAccepts(Ev(probe, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE), &why);
    close(probe);
    if (!ok) GTEST_SKIP() << "EVFILT_VNODE is not available from the daemon: " << why;
  }

  Child watcher({kqd::testing::RunfilePath("examples/c/file_watch"), path});
  std::string line;
  ASSERT_TRUE(watcher.ReadLine(&line, 10s));
  ASSERT_EQ(line, "watching 1 files");

  fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "more\n", 5), 5);
  close(fd);
  // Open and close notes may come first; a write note must follow.
  bool saw_write = false;
  while (!saw_write && watcher.ReadLine(&line, 10s)) {
    EXPECT_EQ(line.rfind(path + ": ", 0), 0u) << line;
    saw_write = line.find("NOTE_WRITE") != std::string::npos;
  }
  EXPECT_TRUE(saw_write) << watcher.ReadAll(100ms);

  ASSERT_EQ(unlink(path.c_str()), 0);
  bool saw_delete = false;
  while (!saw_delete && watcher.ReadLine(&line, 10s))
    saw_delete = line.find("NOTE_DELETE") != std::string::npos;
  EXPECT_TRUE(saw_delete) << watcher.ReadAll(100ms);
  // The only file is gone: the watcher ends by itself.
  int status = 0;
  ASSERT_TRUE(watcher.Wait(&status, 10s));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// Whether the daemon takes an EVFILT_PROC knote with `fflags` on a child.
bool ProcFilterWorks(uint32_t fflags, std::string* why) {
  if (!KnownByName("EVFILT_PROC", EVFILT_PROC)) {
    *why = "KFILTER_BYNAME does not know EVFILT_PROC";
    return false;
  }
  int gate[2];
  if (pipe2(gate, O_CLOEXEC) < 0) return false;
  pid_t pid = fork();
  if (pid == 0) {
    char c;
    close(gate[1]);  // else our own copy keeps the pipe from reaching EOF
    while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  close(gate[0]);
  bool ok = pid > 0 && DaemonAccepts(Ev(pid, EVFILT_PROC, EV_ADD, fflags), why);
  close(gate[1]);
  int status;
  if (pid > 0) waitpid(pid, &status, 0);
  return ok;
}

TEST_F(ExamplesTest, ProcWatchFollowsACommand) {
  std::string why;
  if (!ProcFilterWorks(NOTE_EXIT | NOTE_FORK | NOTE_EXEC, &why))
    GTEST_SKIP() << "EVFILT_PROC is not available from the daemon: " << why;
  Child watcher({kqd::testing::RunfilePath("examples/c/proc_watch"), "--", "/bin/sh", "-c",
                 "/bin/true & wait; exit 3"});
  std::string output = watcher.ReadAll(20s);
  int status = 0;
  ASSERT_TRUE(watcher.Wait(&status, 10s)) << output;
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 3) << output;
  EXPECT_NE(output.find(": NOTE_EXEC\n"), std::string::npos) << output;
  EXPECT_NE(output.find(": NOTE_FORK\n"), std::string::npos) << output;
  EXPECT_NE(output.find(": NOTE_EXIT exited 3\n"), std::string::npos) << output;
}

TEST_F(ExamplesTest, ProcWatchTracksChildren) {
  std::string why;
  if (!ProcFilterWorks(NOTE_EXIT | NOTE_FORK | NOTE_EXEC | NOTE_TRACK, &why))
    GTEST_SKIP() << "EVFILT_PROC with NOTE_TRACK is not available from the daemon: " << why;
  Child watcher({kqd::testing::RunfilePath("examples/c/proc_watch"), "--track", "--", "/bin/sh", "-c",
                 "/bin/true & wait; exit 0"});
  std::string output = watcher.ReadAll(20s);
  int status = 0;
  ASSERT_TRUE(watcher.Wait(&status, 10s)) << output;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_NE(output.find(": NOTE_CHILD of "), std::string::npos) << output;
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
