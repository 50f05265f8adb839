/* rtpgen: the RTP load generator of bench/relay.py.
 *
 * Sends 50 packets/s to each of N relay ports (the N streams spread evenly over every 20 ms),
 * receives what the relay forwards, and reports the send->receive delay of every packet sent
 * in the measured window. Each packet is 172 bytes: a 12-byte RTP header and 160 bytes of
 * payload that start with the send time (CLOCK_MONOTONIC, ns, big-endian) and the
 * destination leg's index. Packets for leg i go out from generator socket i % SOCKETS, the
 * address the relay expects leg i's media from; leg i's partner (i ^ 1) forwards them back to
 * its own generator socket, which the generator checks ("misrouted" otherwise).
 *
 * Build:  cc -O2 -o rtpgen bench/rtpgen.c      (relay.py does this itself, in a temp folder)
 * Run:    rtpgen WARMUP SECONDS SOCKETS PORT...
 * Talks over stdin/stdout, one line each way:
 *   out "ports P1 .. PS"      its sockets' ports, once bound
 *   in  "go"                  the relay knows them: start in 50 ms
 *   out "start NS"            when the first period starts (CLOCK_MONOTONIC ns)
 *   out "result key=value.."  at the end (by itself, WARMUP + SECONDS + 0.1 s after start):
 *       sent, received (all), window_sent, window_received, misrouted, its own CPU time
 *       per second of window (ns), and the delays' p50, p99, p999 and max in ns over the
 *       packets sent in the window.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 20000000LL
#define PACKET 172
#define BATCH 64
/* Sleep at least this long between sends: 100 send slots per 20 ms instead of a wake-up per
 * packet, so the generator stays well below one core at 60,000 packets/s. */
#define QUANTUM_NS 200000LL

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int64_t cpu_ns(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return ((int64_t)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000LL +
           ((int64_t)u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000LL;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t percentile(const int64_t *sorted, size_t n, double q) {
    if (n == 0) return -1;
    size_t rank = (size_t)(q * (double)n); /* nearest rank, 0-based */
    return sorted[rank < n ? rank : n - 1];
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static void wait_events(int ep, struct epoll_event *events, int max, int64_t ns, int *n) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    struct timespec t = {ns / 1000000000LL, ns % 1000000000LL};
    *n = epoll_pwait2(ep, events, max, &t, NULL);
#else
    *n = epoll_wait(ep, events, max, (int)((ns + 999999) / 1000000));
#endif
    if (*n < 0 && errno != EINTR) die("epoll_wait");
    if (*n < 0) *n = 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: rtpgen WARMUP SECONDS SOCKETS PORT...\n");
        return 2;
    }
    double warmup = atof(argv[1]), seconds = atof(argv[2]);
    int nsock = atoi(argv[3]), legs = argc - 4;
    if (nsock < 1 || nsock > 1024) return 2;

    struct sockaddr_in *targets = calloc(legs, sizeof *targets);
    uint8_t (*packets)[PACKET] = calloc(legs, PACKET);
    for (int i = 0; i < legs; i++) {
        targets[i].sin_family = AF_INET;
        targets[i].sin_port = htons((uint16_t)atoi(argv[4 + i]));
        targets[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        packets[i][0] = 0x80; /* V=2, PT 0 (PCMU) */
        uint32_t ssrc = htonl(0x10000u + (uint32_t)i), leg = htonl((uint32_t)i);
        memcpy(packets[i] + 8, &ssrc, 4);
        memcpy(packets[i] + 20, &leg, 4);
        memset(packets[i] + 24, 0xFF, PACKET - 24); /* mu-law silence */
    }

    int ep = epoll_create1(0);
    int *socks = calloc(nsock, sizeof *socks);
    printf("ports");
    for (int s = 0; s < nsock; s++) {
        socks[s] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int size = 4 << 20;
        setsockopt(socks[s], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        if (bind(socks[s], (struct sockaddr *)&a, sizeof a) < 0) die("bind");
        getsockname(socks[s], (struct sockaddr *)&a, &len);
        printf(" %d", ntohs(a.sin_port));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)s};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, socks[s], &ev) < 0) die("epoll_ctl");
    }
    printf("\n");
    fflush(stdout);

    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 1; /* "go" */
    int64_t start = now_ns() + 50000000LL;
    int64_t from = start + (int64_t)(warmup * 1e9), to = from + (int64_t)(seconds * 1e9);
    int64_t end = to + 100000000LL;
    printf("start %lld\n", (long long)start);
    fflush(stdout);

    size_t cap = (size_t)(legs * 50.0 * (seconds + 1)) + 1024, count = 0;
    int64_t *delays = malloc(cap * sizeof *delays);
    long long sent = 0, received = 0, window_sent = 0, window_received = 0, misrouted = 0;
    static uint8_t bufs[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    for (int k = 0; k < BATCH; k++) {
        iovs[k] = (struct iovec){bufs[k], sizeof bufs[k]};
        msgs[k].msg_hdr = (struct msghdr){.msg_iov = &iovs[k], .msg_iovlen = 1};
    }
    struct epoll_event events[1024];
    int64_t period = 0, cpu_from = -1, cpu_to = -1;
    int index = 0;

    for (;;) {
        int64_t now = now_ns();
        if (now >= end) break;
        if (cpu_from < 0 && now >= from) cpu_from = cpu_ns();
        if (cpu_to < 0 && now >= to) cpu_to = cpu_ns();
        /* Send every packet whose slot has come. */
        while (now >= start + period * PERIOD_NS + index * PERIOD_NS / legs) {
            uint8_t *p = packets[index];
            uint16_t seq = htons((uint16_t)period);
            uint32_t ts = htonl((uint32_t)(period * 160));
            memcpy(p + 2, &seq, 2);
            memcpy(p + 4, &ts, 4);
            int64_t stamp = now_ns();
            put64(p + 12, (uint64_t)stamp);
            sendto(socks[index % nsock], p, PACKET, 0, (struct sockaddr *)&targets[index],
                   sizeof targets[index]);
            sent++;
            window_sent += stamp >= from && stamp < to;
            if (++index == legs) index = 0, period++;
        }
        int64_t wait = start + period * PERIOD_NS + index * PERIOD_NS / legs - now_ns();
        int n;
        wait_events(ep, events, 1024, wait < QUANTUM_NS ? QUANTUM_NS : wait, &n);
        for (int e = 0; e < n; e++) {
            int s = (int)events[e].data.u32;
            int got;
            do {
                got = recvmmsg(socks[s], msgs, BATCH, MSG_DONTWAIT, NULL);
                int64_t arrived = now_ns();
                for (int k = 0; k < got; k++) {
                    if (msgs[k].msg_len < 24) continue;
                    int64_t stamp = (int64_t)get64(bufs[k] + 12);
                    uint32_t leg;
                    memcpy(&leg, bufs[k] + 20, 4);
                    leg = ntohl(leg);
                    received++;
                    if (leg >= (uint32_t)legs || (int)((leg ^ 1) % nsock) != s) misrouted++;
                    if (stamp < from || stamp >= to) continue;
                    window_received++;
                    if (count == cap) delays = realloc(delays, (cap *= 2) * sizeof *delays);
                    delays[count++] = arrived - stamp;
                }
            } while (got == BATCH);
        }
    }

    qsort(delays, count, sizeof *delays, cmp64);
    printf("result sent=%lld received=%lld window_sent=%lld window_received=%lld "
           "misrouted=%lld cpu=%lld p50=%lld p99=%lld p999=%lld max=%lld\n",
           sent, received, window_sent, window_received, misrouted,
           (long long)((cpu_to - cpu_from) * 1e9 / (double)(to - from)),
           (long long)percentile(delays, count, 0.50), (long long)percentile(delays, count, 0.99),
           (long long)percentile(delays, count, 0.999),
           (long long)(count ? delays[count - 1] : -1));
    fflush(stdout);
    return 0;
}
