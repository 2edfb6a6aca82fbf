/*
 * Bulk throughput over one TCP connection, for the tunnel benchmark (bench/tunnels.ts): a target
 * that sinks or sources bytes, and a client that measures MB/s through whatever sits between.
 *
 *   bulk serve PORT          on 127.0.0.1, one connection at a time: a 9-byte request ('U' or
 *                            'D', then a 64-bit big-endian byte count), then
 *                            'U': read that many bytes, answer with 8 bytes, the count received;
 *                            'D': send that many bytes, then wait for the client to close.
 *   bulk up PORT BYTES       send BYTES, wait for the answer: client-to-target MB/s
 *   bulk down PORT BYTES     receive BYTES: target-to-client MB/s
 *
 * Neither side relies on a half-close, which not every tunnel passes on.
 *
 * The client prints one JSON line: {"bytes":N,"seconds":S,"mbPerSecond":M}. A short count is an
 * error (exit 1), never a result.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_full(int fd, unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int serve(int port) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = loopback(port);
  if (bind(listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(listener, 16) != 0) {
    perror("bulk serve");
    return 1;
  }
  printf("listening\n");
  fflush(stdout);
  static unsigned char buffer[CHUNK];
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) continue;
    unsigned char request[9];
    if (read_full(fd, request, 9) == 0) {
      uint64_t count = get64(request + 1);
      if (request[0] == 'U') {
        uint64_t received = 0;
        ssize_t r;
        while (received < count) {
          size_t want = count - received < CHUNK ? (size_t)(count - received) : CHUNK;
          if ((r = read(fd, buffer, want)) <= 0) break;
          received += (uint64_t)r;
        }
        unsigned char answer[8];
        put64(answer, received);
        write_all(fd, answer, 8);
      } else if (request[0] == 'D') {
        memset(buffer, 0x5a, CHUNK);
        while (count > 0) {
          size_t n = count < CHUNK ? (size_t)count : CHUNK;
          if (write_all(fd, buffer, n) != 0) break;
          count -= n;
        }
        while (read(fd, buffer, CHUNK) > 0) {}
      }
    }
    close(fd);
  }
}

static int client(const char *mode, int port, uint64_t bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = loopback(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("bulk connect");
    return 1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  unsigned char request[9];
  request[0] = strcmp(mode, "up") == 0 ? 'U' : 'D';
  put64(request + 1, bytes);
  static unsigned char buffer[CHUNK];
  memset(buffer, 0xa5, CHUNK);
  double started = now();
  if (write_all(fd, request, 9) != 0) return 1;
  uint64_t moved = 0;
  if (request[0] == 'U') {
    while (moved < bytes) {
      size_t n = bytes - moved < CHUNK ? (size_t)(bytes - moved) : CHUNK;
      if (write_all(fd, buffer, n) != 0) break;
      moved += n;
    }
    unsigned char answer[8];
    if (read_full(fd, answer, 8) != 0) {
      fprintf(stderr, "bulk up: no count came back\n");
      return 1;
    }
    moved = get64(answer);
  } else {
    ssize_t r;
    while (moved < bytes && (r = read(fd, buffer, CHUNK)) > 0) moved += (uint64_t)r;
  }
  double seconds = now() - started;
  close(fd);
  if (moved != bytes) {
    fprintf(stderr, "bulk %s: %llu of %llu bytes\n", mode, (unsigned long long)moved,
            (unsigned long long)bytes);
    return 1;
  }
  printf("{\"bytes\":%llu,\"seconds\":%.6f,\"mbPerSecond\":%.2f}\n", (unsigned long long)moved,
         seconds, moved / seconds / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  if (argc == 4 && (strcmp(argv[1], "up") == 0 || strcmp(argv[1], "down") == 0)) {
    return client(argv[1], atoi(argv[2]), strtoull(argv[3], NULL, 10));
  }
  fprintf(stderr, "usage: bulk serve PORT | bulk up|down PORT BYTES\n");
  return 2;
}
