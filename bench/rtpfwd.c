/* rtpfwd: a plain C RTP forwarder, the yardstick bench/relay.py sets the Python relay against.
 *
 * LEGS UDP sockets on 127.0.0.1, paired into calls (leg i's partner is leg i ^ 1), all in one
 * epoll set. A packet read on leg i (recvmmsg, up to 32 at a time) is dropped unless it comes
 * from leg i's remote address and looks like RTP (version 2, at least 12 bytes); otherwise it
 * is sent from leg i ^ 1 to that leg's remote with the outgoing stream's own SSRC, sequence
 * number and timestamp written into the header. That is the relay's work per packet, without
 * recording, transcoding, telephone-event handling or any of the relay's bookkeeping.
 *
 * Build:  cc -O2 -o rtpfwd bench/rtpfwd.c      (relay.py does this itself, in a temp folder)
 * Run:    rtpfwd LEGS MAX_SECONDS
 * Talks over stdin/stdout:
 *   out "ports P0 .. P(LEGS-1)"  its legs' ports, once bound
 *   in  "remotes G0 .. G(S-1)"   leg i's remote is 127.0.0.1:G(i % S)
 *   in  "stats"                  out "stats key=value..": received, forwarded, strangers and
 *                                epoll wake-ups so far (the bench samples them per window)
 * It stops when stdin closes, or after MAX_SECONDS at the latest.
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define STDIN_TAG UINT32_MAX

struct leg {
    int fd;
    struct sockaddr_in remote;
    uint32_t ssrc;     /* the outgoing stream's own */
    uint16_t seq;      /* next outgoing sequence number */
    uint32_t ts_shift; /* outgoing timestamp = incoming + shift, fixed at the first packet */
    int anchored;
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: rtpfwd LEGS MAX_SECONDS\n");
        return 2;
    }
    int legs = atoi(argv[1]) & ~1;
    double deadline = now_s() + atof(argv[2]);
    struct leg *leg = calloc(legs, sizeof *leg);
    int ep = epoll_create1(0);
    printf("ports");
    for (int i = 0; i < legs; i++) {
        leg[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        if (leg[i].fd < 0 || bind(leg[i].fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
        getsockname(leg[i].fd, (struct sockaddr *)&a, &len);
        printf(" %d", ntohs(a.sin_port));
        leg[i].ssrc = htonl(0x5EED0000u + (uint32_t)i);
        leg[i].seq = (uint16_t)(i * 7919);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, leg[i].fd, &ev) < 0) die("epoll_ctl");
    }
    printf("\n");
    fflush(stdout);

    /* "remotes G0 .. G(S-1)"; stdin unbuffered, so epoll sees every later line. */
    static char line[1 << 16];
    setvbuf(stdin, NULL, _IONBF, 0);
    if (!fgets(line, sizeof line, stdin)) return 1;
    int remotes[1024], nremote = 0;
    for (char *tok = strtok(line + 7, " \n"); tok && nremote < 1024; tok = strtok(NULL, " \n"))
        remotes[nremote++] = atoi(tok);
    if (nremote == 0) return 1;
    for (int i = 0; i < legs; i++) {
        leg[i].remote.sin_family = AF_INET;
        leg[i].remote.sin_port = htons((uint16_t)remotes[i % nremote]);
        leg[i].remote.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
    epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev);

    static uint8_t bufs[BATCH][2048];
    struct sockaddr_in sources[BATCH];
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    for (int k = 0; k < BATCH; k++) {
        iovs[k] = (struct iovec){bufs[k], sizeof bufs[k]};
        msgs[k].msg_hdr = (struct msghdr){.msg_iov = &iovs[k], .msg_iovlen = 1};
    }
    long long received = 0, forwarded = 0, strangers = 0, wakeups = 0;
    struct epoll_event events[1024];
    int running = 1;
    while (running && now_s() < deadline) {
        int n = epoll_wait(ep, events, 1024, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        wakeups++;
        for (int e = 0; e < n; e++) {
            uint32_t i = events[e].data.u32;
            if (i == STDIN_TAG) {
                running = read(STDIN_FILENO, line, sizeof line) > 0;
                if (running) {
                    printf("stats received=%lld forwarded=%lld strangers=%lld wakeups=%lld\n",
                           received, forwarded, strangers, wakeups);
                    fflush(stdout);
                }
                continue;
            }
            struct leg *in = &leg[i], *out = &leg[i ^ 1];
            int got;
            do {
                for (int k = 0; k < BATCH; k++) {
                    msgs[k].msg_hdr.msg_name = &sources[k];
                    msgs[k].msg_hdr.msg_namelen = sizeof sources[k];
                }
                got = recvmmsg(in->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                for (int k = 0; k < got; k++) {
                    uint8_t *p = bufs[k];
                    received++;
                    if (sources[k].sin_port != in->remote.sin_port ||
                        sources[k].sin_addr.s_addr != in->remote.sin_addr.s_addr) {
                        strangers++;
                        continue;
                    }
                    if (msgs[k].msg_len < 12 || (p[0] & 0xC0) != 0x80) continue;
                    uint32_t ts;
                    memcpy(&ts, p + 4, 4);
                    if (!out->anchored) out->ts_shift = 160u * 7919u - ntohl(ts), out->anchored = 1;
                    uint16_t seq = htons(out->seq++);
                    ts = htonl(ntohl(ts) + out->ts_shift);
                    memcpy(p + 2, &seq, 2);
                    memcpy(p + 4, &ts, 4);
                    memcpy(p + 8, &out->ssrc, 4);
                    if (sendto(out->fd, p, msgs[k].msg_len, 0, (struct sockaddr *)&out->remote,
                               sizeof out->remote) > 0)
                        forwarded++;
                }
            } while (got == BATCH);
        }
    }
    return 0;
}
