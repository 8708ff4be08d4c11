/*
 * echo_server — a TCP echo server on kqueue, written as plain BSD code.
 *
 *   echo_server [--bind ADDR] [--max-clients N] [--exit-after N] PORT
 *
 * PORT 0 picks a free port; the server prints "listening on port P" once it
 * accepts connections. One kqueue watches the listening socket and every
 * client with EVFILT_READ. A client whose socket buffer fills up gets an
 * EVFILT_WRITE event (EV_ONESHOT) and its READ event is disabled until its
 * output has drained, so a slow reader cannot make the server block.
 * Connections past --max-clients are accepted and closed at once.
 * --exit-after N: exit (status 0) after N clients have disconnected.
 */
#include <sys/types.h>
#include <sys/event.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define READ_CHUNK 4096

struct client {
  int fd;          /* -1: free slot */
  char *pending;   /* bytes read but not yet written back */
  size_t pending_len;
};

static struct client *clients;
static int max_clients = 64;
static int active_clients;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: echo_server [--bind ADDR] [--max-clients N] [--exit-after N] PORT\n");
  exit(2);
}

static void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl");
}

/* Applies one change; the program cannot go on if the kqueue refuses it. */
static void change(int kq, uintptr_t ident, uint32_t filter, uint32_t flags, void *udata) {
  struct kevent ev;
  EV_SET(&ev, ident, filter, flags, 0, 0, udata);
  if (kevent(kq, &ev, 1, NULL, 0, NULL) < 0) die("kevent (change)");
}

static void drop_client(struct client *c) {
  /* close() removes the socket's knotes: no EV_DELETE needed. */
  close(c->fd);
  free(c->pending);
  c->fd = -1;
  c->pending = NULL;
  c->pending_len = 0;
  active_clients--;
}

/* Writes as much pending output as the socket takes. Returns 0 when all of
 * it is gone, 1 when some is left, -1 when the peer is gone. */
static int flush_client(struct client *c) {
  size_t done = 0;
  while (done < c->pending_len) {
    ssize_t n = write(c->fd, c->pending + done, c->pending_len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return -1;
    }
    done += (size_t)n;
  }
  memmove(c->pending, c->pending + done, c->pending_len - done);
  c->pending_len -= done;
  return c->pending_len == 0 ? 0 : 1;
}

/* Reads what is there and echoes it, a chunk at a time: each chunk is
 * written back before the next is read, so a client that keeps sending
 * while its echo is not taken fills its own socket buffers, not the
 * server's memory. Returns -1 when the client is done. */
static int serve_read(int kq, struct client *c, int eof) {
  char buf[READ_CHUNK];
  int rc = 0;
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return -1;
    }
    if (n == 0) return -1; /* orderly shutdown, everything read */
    char *grown = realloc(c->pending, c->pending_len + (size_t)n);
    if (grown == NULL) die("realloc");
    c->pending = grown;
    memcpy(c->pending + c->pending_len, buf, (size_t)n);
    c->pending_len += (size_t)n;
    rc = flush_client(c);
    if (rc != 0) break; /* the peer is gone, or its output is blocked */
  }
  if (rc < 0) return -1;
  if (rc > 0) {
    /* Stop reading until the output drains; one WRITE event will say when. */
    change(kq, (uintptr_t)c->fd, EVFILT_READ, EV_DISABLE, c);
    change(kq, (uintptr_t)c->fd, EVFILT_WRITE, EV_ADD | EV_ONESHOT, c);
    return 0;
  }
  /* EV_EOF with nothing left to read: read() saw 0 above, unless the peer
   * reset the connection. */
  return eof ? -1 : 0;
}

static void accept_clients(int kq, int listener, int64_t backlog) {
  /* data is the backlog length; take at least one in case it is stale. */
  for (int64_t i = 0; i < (backlog > 0 ? backlog : 1); i++) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return;
      die("accept");
    }
    if (active_clients >= max_clients) {
      fprintf(stderr, "echo_server: refusing a client (%d connected)\n", active_clients);
      close(fd);
      continue;
    }
    struct client *c = NULL;
    for (int s = 0; s < max_clients; s++) {
      if (clients[s].fd < 0) {
        c = &clients[s];
        break;
      }
    }
    set_nonblocking(fd);
    c->fd = fd;
    active_clients++;
    /* udata carries the slot back with every event of this socket. */
    change(kq, (uintptr_t)fd, EVFILT_READ, EV_ADD, c);
  }
}

int main(int argc, char **argv) {
  const char *bind_addr = "127.0.0.1";
  long exit_after = -1;
  const char *port_arg = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc) {
      bind_addr = argv[++i];
    } else if (strcmp(argv[i], "--max-clients") == 0 && i + 1 < argc) {
      max_clients = atoi(argv[++i]);
      if (max_clients <= 0) usage();
    } else if (strcmp(argv[i], "--exit-after") == 0 && i + 1 < argc) {
      exit_after = atol(argv[++i]);
      if (exit_after <= 0) usage();
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      usage();
    } else if (port_arg == NULL) {
      port_arg = argv[i];
    } else {
      usage();
    }
  }
  if (port_arg == NULL) usage();

  /* A client that vanishes mid-write must not kill the server. */
  signal(SIGPIPE, SIG_IGN);

  clients = calloc((size_t)max_clients, sizeof *clients);
  if (clients == NULL) die("calloc");
  for (int s = 0; s < max_clients; s++) clients[s].fd = -1;

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(port_arg));
  if (inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) {
    fprintf(stderr, "echo_server: bad address %s\n", bind_addr);
    return 2;
  }
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(listener, 128) < 0) die("listen");
  set_nonblocking(listener);
  socklen_t len = sizeof addr;
  if (getsockname(listener, (struct sockaddr *)&addr, &len) < 0) die("getsockname");

  int kq = kqueue();
  if (kq < 0) die("kqueue");
  change(kq, (uintptr_t)listener, EVFILT_READ, EV_ADD, NULL);

  /* Only now: a client that connects after this line is served. */
  printf("listening on port %d\n", ntohs(addr.sin_port));
  fflush(stdout);

  long served = 0;
  struct kevent events[MAX_EVENTS];
  for (;;) {
    int n = kevent(kq, NULL, 0, events, MAX_EVENTS, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("kevent");
    }
    for (int i = 0; i < n; i++) {
      struct kevent *ev = &events[i];
      if (ev->flags & EV_ERROR) {
        fprintf(stderr, "echo_server: event error on %lu: %s\n", (unsigned long)ev->ident,
                strerror((int)ev->data));
        continue;
      }
      if ((int)ev->ident == listener) {
        accept_clients(kq, listener, ev->data);
        continue;
      }
      struct client *c = ev->udata;
      /* An earlier event of this batch may have dropped the client. */
      if (c->fd != (int)ev->ident) continue;
      int done;
      if (ev->filter == EVFILT_WRITE) {
        done = flush_client(c);
        if (done == 0) change(kq, ev->ident, EVFILT_READ, EV_ENABLE, c);
        if (done > 0) change(kq, ev->ident, EVFILT_WRITE, EV_ADD | EV_ONESHOT, c);
      } else {
        done = serve_read(kq, c, (ev->flags & EV_EOF) != 0);
      }
      if (done < 0) {
        drop_client(c);
        served++;
        if (exit_after > 0 && served >= exit_after) {
          printf("served %ld clients\n", served);
          return 0;
        }
      }
    }
  }
}
