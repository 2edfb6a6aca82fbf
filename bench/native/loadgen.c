/*
 * hmac-echo load generator: single-threaded epoll, libcrypto HMAC-SHA1, every handshake and every
 * echoed byte verified. Benchmark-only code (see bench/bench.ts); the protocol is docs/PROTOCOL.md.
 *
 * loadgen MODE --port P [--secret S | --no-auth] [options]; prints one JSON object on stdout.
 *   sessions  --concurrency C --duration S      connect, handshake, one 16-byte round trip, close
 *   rtt       --connections N --duration S [--rate R]   32-byte round trips on N authenticated
 *                                                       connections; --rate paces them to R/s total
 *   bulk      --duration S                      one connection, 64 KiB writes, echo verified
 *   hold      --connections N --duration S      open and authenticate N connections (stop at the
 *                                               first failure), prove each with a round trip, hold
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { SESSIONS, RTT, BULK, HOLD };
enum state { CONNECTING, CHALLENGE, WAITING_ECHO, DRAINING, IDLE_DUE, HELD, BULK_RUN };

typedef struct {
  int fd;
  enum state state;
  unsigned char in[64 * 1024];
  size_t in_len;
  unsigned char sent[64];  /* the payload in flight, to check its echo */
  size_t sent_len;
  double sent_at;          /* when the payload was sent (or was due, when paced) */
  double due;              /* paced mode: when the next payload is due */
  uint64_t bulk_sent, bulk_echoed;
  uint64_t round_trips;    /* rtt mode: round trips measured on this connection */
  double worst;            /* rtt mode: its slowest round trip, in seconds */
} conn_t;

static struct {
  enum mode mode;
  const char *host;
  int port;
  const unsigned char *secret;
  size_t secret_len;
  int auth;
  int connections;
  double duration;
  double rate;
  size_t size;
} opt = {.host = "127.0.0.1", .auth = 1, .connections = 1, .duration = 5, .size = 32};

static int ep;
static uint64_t completed, errors, verify_failures, handshakes;
static uint64_t latency_us[200001]; /* 1 µs buckets up to 200 ms; the last one collects the rest */
static uint64_t latency_count;

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(2);
}

static void record_latency(double seconds) {
  long us = (long)(seconds * 1e6);
  if (us < 0) us = 0;
  if (us > 200000) us = 200000;
  latency_us[us]++;
  latency_count++;
}

static double percentile(double p) {
  if (latency_count == 0) return 0;
  uint64_t rank = (uint64_t)(p * latency_count), seen = 0;
  for (int i = 0; i <= 200000; i++) {
    seen += latency_us[i];
    if (seen > rank) return i / 1000.0; /* ms */
  }
  return 200;
}

static int open_conn(conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (opt.mode == SESSIONS) {
    /* Tens of thousands of closed sessions leave their ports in TIME_WAIT; from one source
     * address connect() then slows as the 28k-port range fills, and the numbers would depend on
     * what ran before. 200 loopback sources multiply the port space. The port is chosen at
     * connect time (IP_BIND_ADDRESS_NO_PORT), so all four tuple fields can vary. */
    static unsigned next_source;
    struct sockaddr_in source = {.sin_family = AF_INET};
    source.sin_addr.s_addr = htonl(0x7f000002 + (next_source++ % 200));
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    bind(c->fd, (struct sockaddr *)&source, sizeof source);
  }
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
  inet_pton(AF_INET, opt.host, &addr.sin_addr);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    close(c->fd);
    return -1;
  }
  c->state = CONNECTING;
  c->in_len = 0;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
  return 0;
}

static void close_conn(conn_t *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

static void watch(conn_t *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes all of buf; the payloads here are small enough for one send on a fresh socket buffer. */
static int send_all(conn_t *c, const unsigned char *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) continue; /* rare for tiny writes; spin briefly */
      return -1;
    }
    off += n;
  }
  return 0;
}

static void send_payload(conn_t *c, double at) {
  for (size_t i = 0; i < c->sent_len; i++) c->sent[i] = 'a' + (rand() % 26);
  c->sent_at = at;
  if (send_all(c, c->sent, c->sent_len) < 0) {
    errors++;
    close_conn(c);
  }
  c->state = WAITING_ECHO;
}

/* After connect: the challenge (auth) or straight to the payload (no auth). */
static void on_connected(conn_t *c) {
  c->sent_len = opt.mode == SESSIONS ? 16 : opt.size;
  if (opt.auth) {
    c->state = CHALLENGE;
    watch(c, EPOLLIN);
  } else {
    handshakes++;
    watch(c, EPOLLIN);
    if (opt.mode == BULK) {
      c->state = BULK_RUN;
      watch(c, EPOLLIN | EPOLLOUT);
    } else {
      send_payload(c, now());
    }
  }
}

static void answer_challenge(conn_t *c) {
  unsigned char digest[20], answer[40 + 64];
  unsigned int len = 0;
  HMAC(EVP_sha1(), opt.secret, (int)opt.secret_len, c->in, 32, digest, &len);
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 20; i++) {
    answer[2 * i] = hex[digest[i] >> 4];
    answer[2 * i + 1] = hex[digest[i] & 15];
  }
  handshakes++;
  c->in_len = 0;
  if (opt.mode == BULK) {
    if (send_all(c, answer, 40) < 0) die("send answer");
    c->state = BULK_RUN;
    watch(c, EPOLLIN | EPOLLOUT);
    return;
  }
  /* The first payload rides with the answer (PROTOCOL.md §3: bytes behind the answer are kept). */
  for (size_t i = 0; i < c->sent_len; i++) c->sent[i] = 'a' + (rand() % 26);
  memcpy(answer + 40, c->sent, c->sent_len);
  c->sent_at = now();
  if (send_all(c, answer, 40 + c->sent_len) < 0) {
    errors++;
    close_conn(c);
    return;
  }
  c->state = WAITING_ECHO;
}

static int echo_ok(conn_t *c) {
  for (size_t i = 0; i < c->sent_len; i++) {
    if (c->in[i] != c->sent[i] - 32) return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: loadgen sessions|rtt|bulk|hold --port P [--secret S|--no-auth] ...\n");
    return 2;
  }
  if (!strcmp(argv[1], "sessions")) opt.mode = SESSIONS;
  else if (!strcmp(argv[1], "rtt")) opt.mode = RTT;
  else if (!strcmp(argv[1], "bulk")) opt.mode = BULK;
  else if (!strcmp(argv[1], "hold")) opt.mode = HOLD;
  else return 2;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--port")) opt.port = atoi(v), i++;
    else if (!strcmp(a, "--host")) opt.host = v, i++;
    else if (!strcmp(a, "--secret")) opt.secret = (const unsigned char *)v, opt.secret_len = strlen(v), i++;
    else if (!strcmp(a, "--no-auth")) opt.auth = 0;
    else if (!strcmp(a, "--connections") || !strcmp(a, "--concurrency")) opt.connections = atoi(v), i++;
    else if (!strcmp(a, "--duration")) opt.duration = atof(v), i++;
    else if (!strcmp(a, "--rate")) opt.rate = atof(v), i++;
    else if (!strcmp(a, "--size")) opt.size = (size_t)atoi(v), i++;
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  if (opt.auth && !opt.secret) {
    fprintf(stderr, "--secret or --no-auth is required\n");
    return 2;
  }
  if (opt.size > 64) opt.size = 64;
  signal(SIGPIPE, SIG_IGN);
  srand(12345);
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");

  int n = opt.mode == BULK ? 1 : opt.connections;
  conn_t *conns = calloc(n, sizeof(conn_t));
  if (!conns) die("calloc");
  static unsigned char bulk_out[64 * 1024];
  for (size_t i = 0; i < sizeof bulk_out; i++) bulk_out[i] = 'a' + (i % 26);

  double start = now(), measure_from = start, end = start + opt.duration, cpu_from = cpu_seconds();
  int opened = 0, ready = 0, measuring = opt.mode == SESSIONS || opt.mode == BULK;
  uint64_t completed_at_start = 0;
  /* rtt/hold: connect everything first; the clock starts once all are authenticated. */
  for (int i = 0; i < n; i++) {
    if (open_conn(&conns[i]) < 0) {
      errors++;
      conns[i].fd = -1;
      if (opt.mode == HOLD) break;
      continue;
    }
    opened++;
  }
  double pace = opt.rate > 0 ? n / opt.rate : 0; /* seconds between payloads per connection */
  double setup_deadline = start + 60;

  struct epoll_event events[1024];
  for (;;) {
    double t = now();
    if (measuring && t >= end) break;
    if (!measuring && t > setup_deadline) break;
    int timeout_ms = 50;
    if (pace > 0 && measuring) timeout_ms = 1;
    int k = epoll_wait(ep, events, 1024, timeout_ms);
    if (k < 0 && errno != EINTR) die("epoll_wait");
    t = now();
    for (int e = 0; e < k; e++) {
      conn_t *c = events[e].data.ptr;
      if (c->fd < 0) continue;
      uint32_t ev = events[e].events;
      if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
          errors++;
          close_conn(c);
          if (opt.mode == SESSIONS && open_conn(c) < 0) errors++;
          continue;
        }
        on_connected(c);
        if (c->fd < 0 || !(ev & EPOLLIN)) continue;
      }
      if (c->state == BULK_RUN) {
        if (ev & EPOLLOUT && c->bulk_sent - c->bulk_echoed < 4 * 1024 * 1024) {
          size_t off = c->bulk_sent % 26;
          ssize_t w = send(c->fd, bulk_out + off, sizeof bulk_out - 26, MSG_NOSIGNAL);
          if (w > 0) c->bulk_sent += w;
        }
        if (ev & EPOLLIN) {
          ssize_t r = recv(c->fd, c->in, sizeof c->in, 0);
          if (r <= 0) {
            errors++;
            close_conn(c);
            goto done;
          }
          for (ssize_t i = 0; i < r; i++) {
            if (c->in[i] != 'A' + ((c->bulk_echoed + i) % 26)) {
              verify_failures++;
              break;
            }
          }
          c->bulk_echoed += r;
        }
        /* Level-triggered EPOLLOUT would spin while the in-flight window is full: mute it then. */
        watch(c, c->bulk_sent - c->bulk_echoed < 4 * 1024 * 1024 ? EPOLLIN | EPOLLOUT : EPOLLIN);
        continue;
      }
      if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) {
        if (c->state == DRAINING && r == 0) { /* the server closed after our FIN: session done */
          close_conn(c);
          if (measuring) completed++;
          if (opt.mode == SESSIONS && open_conn(c) < 0) errors++;
          continue;
        }
        errors++;
        close_conn(c);
        if (opt.mode == SESSIONS && open_conn(c) < 0) errors++;
        continue;
      }
      c->in_len += r;
      if (c->state == CHALLENGE) {
        if (c->in_len >= 32) answer_challenge(c);
        continue;
      }
      if (c->state == WAITING_ECHO && c->in_len >= c->sent_len) {
        if (!echo_ok(c)) verify_failures++;
        c->in_len = 0;
        if (opt.mode == SESSIONS) {
          shutdown(c->fd, SHUT_WR);
          c->state = DRAINING;
          continue;
        }
        if (opt.mode == HOLD) {
          c->state = HELD;
          ready++;
          continue;
        }
        /* rtt */
        if (!measuring) {
          c->state = IDLE_DUE;
          ready++;
          continue;
        }
        record_latency(t - c->sent_at);
        c->round_trips++;
        if (t - c->sent_at > c->worst) c->worst = t - c->sent_at;
        completed++;
        if (pace > 0) {
          c->due = c->sent_at + pace > t ? c->sent_at + pace : t;
          c->state = IDLE_DUE;
        } else {
          send_payload(c, t);
        }
      }
    }
    if (!measuring && (opt.mode == RTT || opt.mode == HOLD) && ready + (int)errors >= opened) {
      if (opt.mode == HOLD) break;
      measuring = 1;
      measure_from = now();
      cpu_from = cpu_seconds();
      end = measure_from + opt.duration;
      completed_at_start = completed;
      for (int i = 0; i < n; i++) {
        if (conns[i].fd < 0) continue;
        conns[i].due = measure_from + (pace > 0 ? pace * i / n : 0);
        if (pace == 0) send_payload(&conns[i], now());
      }
    }
    if (measuring && pace > 0) {
      for (int i = 0; i < n; i++) {
        conn_t *c = &conns[i];
        if (c->fd >= 0 && c->state == IDLE_DUE && c->due <= t) send_payload(c, c->due);
      }
    }
  }
done:;
  double elapsed = now() - measure_from;
  double generator_cpu = (cpu_seconds() - cpu_from) / elapsed; /* 1.0 = one core saturated */
  if (opt.mode == HOLD) {
    printf("{\"mode\":\"hold\",\"held\":%d,\"errors\":%llu,\"verifyFailures\":%llu}\n", ready,
           (unsigned long long)errors, (unsigned long long)verify_failures);
    fflush(stdout);
    /* Hold until the orchestrator has measured and closes our stdin (or the duration ends). */
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
    double until = now() + opt.duration;
    int flags = fcntl(0, F_GETFL);
    fcntl(0, F_SETFL, flags | O_NONBLOCK);
    char buf[16];
    while (now() < until) {
      ssize_t r = read(0, buf, sizeof buf);
      if (r == 0) break;
      nanosleep(&pause, NULL);
    }
    return 0;
  }
  if (opt.mode == BULK) {
    conn_t *c = &conns[0];
    printf("{\"mode\":\"bulk\",\"seconds\":%.3f,\"bytes\":%llu,\"mbPerSecond\":%.1f,\"errors\":%llu,"
           "\"verifyFailures\":%llu,\"generatorCpu\":%.3f}\n",
           elapsed, (unsigned long long)c->bulk_echoed, c->bulk_echoed / elapsed / 1e6,
           (unsigned long long)errors, (unsigned long long)verify_failures, generator_cpu);
    return verify_failures ? 1 : 0;
  }
  uint64_t done_count = completed - completed_at_start;
  /* Fairness: how the round trips spread over the connections (equal shares are fair), and how
     many connections ever waited longer than the run's p99. */
  uint64_t fewest = 0, most = 0, share_p1 = 0, share_p50 = 0, waited_past_p99 = 0;
  if (opt.mode == RTT && n > 0) {
    uint64_t *shares = calloc(n, sizeof *shares);
    int live = 0;
    double p99 = percentile(0.99) / 1000;
    for (int i = 0; i < n; i++) {
      if (conns[i].fd < 0) continue;
      shares[live++] = conns[i].round_trips;
      if (conns[i].worst > p99) waited_past_p99++;
    }
    for (int i = 1; i < live; i++) { /* insertion sort: n is at most a few thousand */
      uint64_t v = shares[i];
      int j = i - 1;
      while (j >= 0 && shares[j] > v) shares[j + 1] = shares[j], j--;
      shares[j + 1] = v;
    }
    if (live > 0) {
      fewest = shares[0], most = shares[live - 1];
      share_p1 = shares[live / 100], share_p50 = shares[live / 2];
    }
    free(shares);
  }
  printf("{\"mode\":\"%s\",\"connections\":%d,\"seconds\":%.3f,\"completed\":%llu,\"perSecond\":%.1f,"
         "\"p50ms\":%.3f,\"p99ms\":%.3f,\"handshakes\":%llu,\"errors\":%llu,\"verifyFailures\":%llu,"
         "\"generatorCpu\":%.3f,\"perConnection\":{\"fewest\":%llu,\"p1\":%llu,\"median\":%llu,"
         "\"most\":%llu,\"waitedPastP99\":%llu}}\n",
         opt.mode == SESSIONS ? "sessions" : "rtt", n, elapsed, (unsigned long long)done_count,
         done_count / elapsed, percentile(0.5), percentile(0.99), (unsigned long long)handshakes,
         (unsigned long long)errors, (unsigned long long)verify_failures, generator_cpu,
         (unsigned long long)fewest, (unsigned long long)share_p1, (unsigned long long)share_p50,
         (unsigned long long)most, (unsigned long long)waited_past_p99);
  return verify_failures ? 1 : 0;
}
