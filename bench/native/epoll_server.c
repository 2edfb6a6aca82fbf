/*
 * The speed-of-light reference for the benchmark: protocol v1 (docs/PROTOCOL.md) in C, one thread,
 * epoll, libcrypto HMAC-SHA1 with a constant-time compare. Benchmark-only code, not a product:
 * it upper-cases ASCII only (the benchmark's payloads are ASCII) and has no limits or logging.
 *
 * epoll_server PORT [--no-auth]; the secret comes from HMAC_ECHO_SECRET. Prints "listening" when
 * ready.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  int fd;
  int authenticated;
  unsigned char challenge[32];
  unsigned char answer[40];
  size_t answer_len;
  unsigned char *pending; /* output the socket would not take yet: read no more until it is sent */
  size_t pending_len, pending_off;
} conn_t;

static int ep;
static const unsigned char *secret;
static size_t secret_len;
static unsigned char buffer[64 * 1024];

static void drop(conn_t *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->pending);
  free(c);
}

static int hexval(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  ch |= 0x20;
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

static int verify(conn_t *c) {
  unsigned char claimed[20], expected[20];
  unsigned int len = 0;
  for (int i = 0; i < 20; i++) {
    int hi = hexval(c->answer[2 * i]), lo = hexval(c->answer[2 * i + 1]);
    if (hi < 0 || lo < 0) return 0;
    claimed[i] = (unsigned char)(hi << 4 | lo);
  }
  HMAC(EVP_sha1(), secret, (int)secret_len, c->challenge, 32, expected, &len);
  return CRYPTO_memcmp(claimed, expected, 20) == 0;
}

/* Sends out; keeps what the socket will not take. Returns -1 when the connection is gone. */
static int send_or_keep(conn_t *c, const unsigned char *out, size_t len) {
  ssize_t n = send(c->fd, out, len, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno != EAGAIN) return -1;
    n = 0;
  }
  if ((size_t)n < len) {
    c->pending = malloc(len - n);
    memcpy(c->pending, out + n, len - n);
    c->pending_len = len - n;
    c->pending_off = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
  return 0;
}

static void on_readable(conn_t *c) {
  for (;;) {
    if (!c->authenticated) {
      ssize_t n = recv(c->fd, c->answer + c->answer_len, 40 - c->answer_len, 0);
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) return drop(c);
      c->answer_len += n;
      if (c->answer_len < 40) continue;
      if (!verify(c)) return drop(c);
      c->authenticated = 1;
      continue;
    }
    ssize_t n = recv(c->fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) return drop(c);
    for (ssize_t i = 0; i < n; i++) {
      if (buffer[i] >= 'a' && buffer[i] <= 'z') buffer[i] -= 32;
    }
    if (send_or_keep(c, buffer, n) < 0) return drop(c);
    if (c->pending) return; /* backpressure: wait for EPOLLOUT */
  }
}

static void on_writable(conn_t *c) {
  ssize_t n = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN) return;
    return drop(c);
  }
  c->pending_off += n;
  if (c->pending_off < c->pending_len) return;
  free(c->pending);
  c->pending = NULL;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  on_readable(c);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: epoll_server PORT [--no-auth]\n");
    return 2;
  }
  int auth = !(argc > 2 && !strcmp(argv[2], "--no-auth"));
  secret = (const unsigned char *)getenv("HMAC_ECHO_SECRET");
  if (auth && !secret) {
    fprintf(stderr, "HMAC_ECHO_SECRET is not set\n");
    return 2;
  }
  secret_len = secret ? strlen((const char *)secret) : 0;
  signal(SIGPIPE, SIG_IGN);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 4096) < 0) {
    perror("listen");
    return 1;
  }
  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
  fprintf(stderr, "listening on 127.0.0.1:%s\n", argv[1]);
  struct epoll_event events[1024];
  for (;;) {
    int k = epoll_wait(ep, events, 1024, -1);
    for (int e = 0; e < k; e++) {
      conn_t *c = events[e].data.ptr;
      if (c == NULL) {
        for (;;) {
          int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn_t *n = calloc(1, sizeof(conn_t));
          n->fd = fd;
          n->authenticated = !auth;
          if (auth) {
            RAND_bytes(n->challenge, 32);
            if (send(fd, n->challenge, 32, MSG_NOSIGNAL) != 32) {
              close(fd);
              free(n);
              continue;
            }
          }
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = n};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      if (events[e].events & EPOLLOUT) on_writable(c);
      else on_readable(c);
    }
  }
}
