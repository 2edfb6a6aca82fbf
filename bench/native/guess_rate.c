/*
 * How fast an observer tests guesses of the secret offline (docs/SECURITY.md, "The secret"): each
 * guess is one HMAC over what one recorded handshake shows, as OpenSSL computes it. Prints guesses
 * per second for a v1 answer (HMAC-SHA-1 over the 32-byte challenge) and a v2 proof (HMAC-SHA-256
 * over a 106-byte hello). The guesses are 16-byte counters; their values do not change the speed.
 *
 *   cc -O2 bench/native/guess_rate.c -lcrypto -o /tmp/guess_rate && taskset -c 1 /tmp/guess_rate
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* Guesses per second over about two seconds: one HMAC per guess, as a cracker's inner loop. */
static double rate(const EVP_MD *md, const unsigned char *data, size_t length) {
  unsigned char guess[16] = {0}, out[EVP_MAX_MD_SIZE];
  unsigned int out_length;
  unsigned long long tried = 0;
  unsigned char sink = 0;
  double start = now(), elapsed;
  do {
    for (int i = 0; i < 10000; i++, tried++) {
      memcpy(guess, &tried, sizeof tried);
      HMAC(md, guess, sizeof guess, data, length, out, &out_length);
      sink ^= out[0];
    }
    elapsed = now() - start;
  } while (elapsed < 2.0);
  if (sink == 0x100) puts(""); /* keeps the loop's work observable */
  return tried / elapsed;
}

int main(void) {
  unsigned char challenge[32], hello[106];
  memset(challenge, 0x5a, sizeof challenge);
  memset(hello, 0xa5, sizeof hello);
  printf("HMAC-SHA-1 over a 32-byte challenge (v1 answer): %.0f guesses/s\n",
         rate(EVP_sha1(), challenge, sizeof challenge));
  printf("HMAC-SHA-256 over a 106-byte hello (v2 proof):   %.0f guesses/s\n",
         rate(EVP_sha256(), hello, sizeof hello));
  return 0;
}
