/* Differential conformance script: a fixed sequence of socket calls, valid
 * and invalid, each printed as "step: ret errno [detail]". The end-to-end
 * test runs it natively and under libshim.so and compares the transcripts
 * step by step. Usage: conformance CLOSED_PORT (a port nothing listens on). */
#include "common.h"
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/uio.h>

#define STEP(name, call) do { alarm(3); errno = 0; long r_ = (long)(call); int e_ = errno; alarm(0); step(name, r_, e_); } while (0)
#define STEPFD(var, name, call) do { alarm(3); errno = 0; var = (call); int e_ = errno; alarm(0); step_fd(name, var, e_); } while (0)

/* Waits (up to 3 s) until fd reports a hang-up or an error, as a
 * connection does once a reset has arrived. A readable fd alone (an EOF
 * seen first) does not end the wait, and each turn waits its 10 ms. */
static void wait_hangup(int fd)
{
    for (int i = 0; i < 300; i++) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 10) > 0) {
            if (pf.revents & (POLLHUP | POLLERR))
                return;
            usleep(10000);
        }
    }
}

static void getint(const char *name, int fd, int level, int opt)
{
    int v = -12345;
    socklen_t l = sizeof v;
    alarm(3);
    errno = 0;
    int r = getsockopt(fd, level, opt, &v, &l);
    int e = errno;
    alarm(0);
    if (r == 0)
        printf("%s: 0 - value=%d len=%u\n", name, v, (unsigned)l);
    else
        step(name, r, e);
    fflush(stdout);
}

static void name_of(const char *name, int fd, int peer)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t l = sizeof ss;
    alarm(3);
    errno = 0;
    int r = peer ? getpeername(fd, SA(ss), &l) : getsockname(fd, SA(ss), &l);
    int e = errno;
    alarm(0);
    if (r == 0)
        printf("%s: 0 - %s\n", name, fmt_addr(&ss, l));
    else
        step(name, r, e);
    fflush(stdout);
}

/* Offsets in Linux's struct tcp_info (include/uapi/linux/tcp.h), whose
 * later fields glibc's <netinet/tcp.h> does not declare. */
#define TI_NOTSENT_BYTES 144
#define TI_DATA_SEGS_IN 152

/* A u32 of getsockopt(TCP_INFO), or ~0u if the call failed. */
static unsigned tcp_info_u32(int fd, size_t off)
{
    unsigned char ti[256];
    socklen_t l = sizeof ti;
    unsigned v = ~0u;
    memset(ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &l) == 0 && l >= off + 4)
        memcpy(&v, ti + off, 4);
    return v;
}

/* sendmsg of one byte on TCP socket s with one control message (level,
 * type, dlen bytes of data; cmsg_len clen, or CMSG_LEN(dlen) when 0),
 * printed as step name; a byte sent is read back on c ("name-recv": 1,
 * or 0 when nothing was sent). */
static void cmsg_step(const char *name, int s, int c, int level, int type,
                      const void *data, size_t dlen, size_t clen)
{
    union { char b[CMSG_SPACE(64)]; struct cmsghdr align; } cb;
    memset(&cb, 0, sizeof cb);
    char x = 'x', got = 0;
    struct iovec iov = { &x, 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                         .msg_controllen = CMSG_SPACE(dlen) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = level;
    cm->cmsg_type = type;
    cm->cmsg_len = clen ? clen : CMSG_LEN(dlen);
    memcpy(CMSG_DATA(cm), data, dlen);
    alarm(3);
    errno = 0;
    long r = sendmsg(s, &mh, MSG_NOSIGNAL);
    int e = errno;
    alarm(0);
    step(name, r, e);
    char n[96];
    snprintf(n, sizeof n, "%s-recv", name);
    if (r != 1) {
        step(n, 0, 0);
    } else {
        alarm(3);
        errno = 0;
        r = recv(c, &got, 1, MSG_WAITALL);
        e = errno;
        alarm(0);
        step(n, r == 1 && got == 'x' ? 1 : -1, e);
    }
}

static volatile sig_atomic_t sigpipes;

static void count_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: conformance CLOSED_PORT\n");
        return 2;
    }
    int closed = atoi(argv[1]);
    guard_init();
    int one = 1, zero = 0;
    char buf[64];

    /* --- socket() */
    int t, t2, t3, t4, lst, cli, acc, u, u2, s6, p[2];
    STEPFD(t, "socket-tcp4", socket(AF_INET, SOCK_STREAM, 0));
    int bad;
    STEPFD(bad, "socket-stream-udp-proto", socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));
    STEPFD(bad, "socket-bad-type", socket(AF_INET, 99, 0));
    STEPFD(bad, "socket-bad-domain", socket(12345, SOCK_STREAM, 0));
    STEP("socketpair-inet", socketpair(AF_INET, SOCK_STREAM, 0, p));
    getint("tcp-so-type", t, SOL_SOCKET, SO_TYPE);
    getint("tcp-so-domain", t, SOL_SOCKET, SO_DOMAIN);
    getint("tcp-so-protocol", t, SOL_SOCKET, SO_PROTOCOL);
    getint("tcp-so-error", t, SOL_SOCKET, SO_ERROR);
    getint("tcp-so-acceptconn-fresh", t, SOL_SOCKET, SO_ACCEPTCONN);
    name_of("getsockname-unbound", t, 0);
    name_of("getpeername-unconnected", t, 1);

    /* --- bad fds */
    struct sockaddr_in lo0 = sin4("127.0.0.1", 0);
    STEP("bind-badfd-neg", bind(-1, SA(lo0), sizeof lo0));
    STEP("bind-badfd-9999", bind(9999, SA(lo0), sizeof lo0));
    STEP("listen-badfd", listen(9999, 1));
    STEP("connect-badfd", connect(9999, SA(lo0), sizeof lo0));
    STEP("getsockopt-badfd", getsockopt(9999, SOL_SOCKET, SO_TYPE, &one, &(socklen_t){sizeof one}));
    STEP("close-badfd", close(9999));
    int pp[2];
    if (pipe(pp) != 0)
        return 1;
    STEP("getsockname-notsock", getsockname(pp[0], SA(lo0), &(socklen_t){sizeof lo0}));
    STEP("bind-notsock", bind(pp[0], SA(lo0), sizeof lo0));
    STEP("setsockopt-notsock", setsockopt(pp[0], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));

    /* --- unconnected, unbound TCP socket (a socket of its own: a failed
     * shutdown() still marks a Linux socket shut down) */
    int t0 = t;
    STEPFD(t, "socket-tcp4-b", socket(AF_INET, SOCK_STREAM, 0));
    STEP("send-unconnected", send(t0, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT));
    STEP("write-unconnected", ({ signal(SIGPIPE, SIG_IGN); write(t0, "x", 1); }));
    STEP("recv-unconnected", recv(t0, buf, sizeof buf, MSG_DONTWAIT));
    STEP("shutdown-unconnected", shutdown(t0, SHUT_RDWR));
    STEP("shutdown-bad-how", shutdown(t0, 99));
    STEP("accept-not-listening-nb", ({ fcntl(t0, F_SETFL, O_NONBLOCK); accept(t0, NULL, NULL); }));
    printf("fcntl-getfl-nb: %d -\n", fcntl(t0, F_GETFL) & (O_ACCMODE | O_NONBLOCK));
    fcntl(t0, F_SETFL, 0);
    STEP("accept-not-listening-blocking", accept(t0, NULL, NULL));
    printf("fcntl-getfl: %d -\n", fcntl(t0, F_GETFL) & (O_ACCMODE | O_NONBLOCK));
    STEP("close-unconnected", close(t0));

    /* --- options */
    STEP("setsockopt-unknown-opt", setsockopt(t, SOL_SOCKET, 9999, &one, sizeof one));
    STEP("setsockopt-bad-len", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, 2));
    STEP("setsockopt-unknown-level", setsockopt(t, 9999, 1, &one, sizeof one));
    getint("getsockopt-unknown-opt", t, SOL_SOCKET, 9999);
    getint("getsockopt-unknown-tcp-opt", t, IPPROTO_TCP, 9999);
    {
        int v = 7;
        socklen_t l = 0;
        STEP("getsockopt-len0", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &l));
        printf("getsockopt-len0-out: %d - len=%u\n", v, (unsigned)l);
        l = 2;
        v = 0;
        STEP("getsockopt-len2", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &l));
        printf("getsockopt-len2-out: %d - len=%u\n", v, (unsigned)l);
        l = (socklen_t)-1;
        STEP("getsockopt-len-negative", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &l));
        STEP("getsockopt-null-optlen", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, NULL));
    }
    STEP("setsockopt-reuseaddr", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    getint("getsockopt-reuseaddr", t, SOL_SOCKET, SO_REUSEADDR);
    STEP("setsockopt-nodelay", setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    getint("getsockopt-nodelay", t, IPPROTO_TCP, TCP_NODELAY);
    STEP("setsockopt-keepalive", setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
    getint("getsockopt-keepalive", t, SOL_SOCKET, SO_KEEPALIVE);
    {
        int v = 65536;
        STEP("setsockopt-rcvbuf", setsockopt(t, SOL_SOCKET, SO_RCVBUF, &v, sizeof v));
        getint("getsockopt-rcvbuf", t, SOL_SOCKET, SO_RCVBUF);
        struct linger lg = {1, 5};
        STEP("setsockopt-linger", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
        struct linger lg2 = {0, 0};
        socklen_t l = sizeof lg2;
        STEP("getsockopt-linger", getsockopt(t, SOL_SOCKET, SO_LINGER, &lg2, &l));
        printf("getsockopt-linger-out: %d - onoff=%d linger=%d\n", (int)l, lg2.l_onoff, lg2.l_linger);
        lg.l_onoff = 0;
        setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    getint("getsockopt-tcp-maxseg-unconnected", t, IPPROTO_TCP, TCP_MAXSEG);

    /* --- bind */
    struct sockaddr_in6 a6 = sin6("::1", 0);
    STEP("bind-wrong-family", bind(t, SA(a6), sizeof a6));
    STEP("bind-short-len", bind(t, SA(lo0), 8));
    struct sockaddr_in far = sin4("203.0.113.7", 0);
    STEP("bind-nonlocal", bind(t, SA(far), sizeof far));
    STEP("bind-ok", bind(t, SA(lo0), sizeof lo0));
    name_of("getsockname-bound", t, 0);
    STEP("bind-again", bind(t, SA(lo0), sizeof lo0));
    struct sockaddr_in bound = sin4("127.0.0.1", local_port(t));
    STEPFD(t2, "socket-tcp4-2", socket(AF_INET, SOCK_STREAM, 0));
    STEP("bind-same-port", bind(t2, SA(bound), sizeof bound));
    struct sockaddr_in any_same = sin4("0.0.0.0", local_port(t));
    STEP("bind-same-port-any", bind(t2, SA(any_same), sizeof any_same));

    /* --- listen / connect / accept */
    lst = t;
    STEP("listen", listen(lst, 16));
    STEP("listen-again", listen(lst, 32));
    getint("so-acceptconn-listener", lst, SOL_SOCKET, SO_ACCEPTCONN);
    STEP("connect-on-listener", connect(lst, SA(bound), sizeof bound));
    STEP("send-on-listener", send(lst, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT));
    STEP("recv-on-listener", recv(lst, buf, 1, MSG_DONTWAIT));
    STEP("accept4-bad-flags", accept4(lst, NULL, NULL, 0x1234));
    STEPFD(t3, "socket-tcp4-3", socket(AF_INET, SOCK_STREAM, 0));
    STEP("setsockopt-reuseaddr-3", setsockopt(t3, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    STEP("bind-port-of-listener", bind(t3, SA(bound), sizeof bound));
    close(t3);
    STEPFD(cli, "socket-client", socket(AF_INET, SOCK_STREAM, 0));
    STEP("connect-short-len", connect(cli, SA(bound), 4));
    STEP("connect-wrong-family", connect(cli, SA(a6), sizeof a6));
    STEP("connect", connect(cli, SA(bound), sizeof bound));
    STEP("connect-again", connect(cli, SA(bound), sizeof bound));
    name_of("getpeername-client", cli, 1);
    {
        struct sockaddr_storage ss;
        socklen_t l = sizeof ss;
        STEPFD(acc, "accept", accept(lst, SA(ss), &l));
        printf("accept-addr: 0 - %s\n", fmt_addr(&ss, l));
        printf("accept-peer-port-matches: %d -\n", port_of(&ss) == local_port(cli));
        l = 4; /* truncated address */
        int acc2;
        int c2 = socket(AF_INET, SOCK_STREAM, 0);
        connect(c2, SA(bound), sizeof bound);
        memset(&ss, 0, sizeof ss);
        STEPFD(acc2, "accept-short-addrlen", accept(lst, SA(ss), &l));
        printf("accept-short-addrlen-out: 0 - len=%u family=%s\n", (unsigned)l, fam(ss.ss_family));
        close(acc2);
        close(c2);
        int c3 = socket(AF_INET, SOCK_STREAM, 0);
        connect(c3, SA(bound), sizeof bound);
        STEPFD(acc2, "accept4-nonblock-cloexec", accept4(lst, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
        printf("accept4-flags: %d - cloexec=%d\n", fcntl(acc2, F_GETFL) & O_NONBLOCK ? 1 : 0,
               fcntl(acc2, F_GETFD) & FD_CLOEXEC ? 1 : 0);
        STEP("recv-nothing-nb", recv(acc2, buf, 1, 0));
        close(acc2);
        close(c3);
        fcntl(lst, F_SETFL, O_NONBLOCK);
        STEP("accept-empty-queue-nb", accept(lst, NULL, NULL));
        fcntl(lst, F_SETFL, 0);
    }
    name_of("getsockname-accepted", acc, 0);
    name_of("getpeername-accepted", acc, 1);
    getint("so-acceptconn-accepted", acc, SOL_SOCKET, SO_ACCEPTCONN);
    getint("so-error-connected", cli, SOL_SOCKET, SO_ERROR);
    STEP("listen-on-connected", listen(cli, 1));
    STEP("bind-on-connected", bind(cli, SA(lo0), sizeof lo0));
    STEP("sendto-connected-with-addr", sendto(cli, "abc", 3, MSG_NOSIGNAL, SA(bound), sizeof bound));
    STEP("send", send(cli, "hello", 5, MSG_NOSIGNAL));
    STEP("recv", recv(acc, buf, 8, MSG_WAITALL) /* 3 (sendto) + 5 */);
    STEP("recv-peek-nothing", recv(acc, buf, 1, MSG_PEEK | MSG_DONTWAIT));
    STEP("shutdown-wr", shutdown(cli, SHUT_WR));
    STEP("recv-eof", recv(acc, buf, sizeof buf, 0));
    STEP("send-after-shutdown-wr", send(cli, "x", 1, MSG_NOSIGNAL));
    STEP("send-back", send(acc, "ok", 2, MSG_NOSIGNAL));
    STEP("recv-back", recv(cli, buf, 2, MSG_WAITALL));
    STEP("close-accepted", close(acc));
    STEP("recv-after-peer-close", recv(cli, buf, sizeof buf, 0));
    STEP("shutdown-rdwr", shutdown(cli, SHUT_RDWR));
    STEP("close-client", close(cli));
    STEP("close-client-twice", close(cli));

    /* --- connection refused */
    struct sockaddr_in cl = sin4("127.0.0.1", closed);
    STEPFD(t4, "socket-refused", socket(AF_INET, SOCK_STREAM, 0));
    STEP("connect-refused", connect(t4, SA(cl), sizeof cl));
    getint("so-error-after-refused", t4, SOL_SOCKET, SO_ERROR);
    name_of("getpeername-after-refused", t4, 1);
    STEP("send-after-refused", send(t4, "x", 1, MSG_NOSIGNAL));
    close(t4);
    STEPFD(t4, "socket-refused-nb", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    STEP("connect-refused-nb", connect(t4, SA(cl), sizeof cl));
    {
        struct pollfd pf = {t4, POLLOUT, 0};
        STEP("poll-refused-nb", poll(&pf, 1, 3000));
        printf("poll-refused-nb-pollout: %d -\n", (pf.revents & POLLOUT) ? 1 : 0);
    }
    getint("so-error-refused-nb", t4, SOL_SOCKET, SO_ERROR);
    getint("so-error-refused-nb-again", t4, SOL_SOCKET, SO_ERROR);
    close(t4);
    close(t2);

    /* --- UDP */
    int u0;
    STEPFD(u0, "socket-udp4-a", socket(AF_INET, SOCK_DGRAM, 0));
    STEP("udp-send-unconnected", send(u0, "x", 1, MSG_NOSIGNAL));
    STEP("udp-bind-after-autobind", bind(u0, SA(lo0), sizeof lo0));
    close(u0);
    STEPFD(u, "socket-udp4", socket(AF_INET, SOCK_DGRAM, 0));
    getint("udp-so-type", u, SOL_SOCKET, SO_TYPE);
    getint("udp-so-protocol", u, SOL_SOCKET, SO_PROTOCOL);
    STEP("udp-recv-empty-nb", recv(u, buf, sizeof buf, MSG_DONTWAIT));
    STEP("udp-listen", listen(u, 1));
    STEP("udp-accept", accept(u, NULL, NULL));
    STEP("udp-shutdown-unconnected", shutdown(u, SHUT_RDWR));
    name_of("udp-getpeername-unconnected", u, 1);
    STEP("udp-sendto-short-len", sendto(u, "x", 1, 0, SA(cl), 4));
    STEP("udp-sendto-wrong-family", sendto(u, "x", 1, 0, SA(a6), sizeof a6));
    STEP("udp-bind", bind(u, SA(lo0), sizeof lo0));
    struct sockaddr_in ub = sin4("127.0.0.1", local_port(u));
    STEPFD(u2, "socket-udp4-2", socket(AF_INET, SOCK_DGRAM, 0));
    STEP("udp-bind-same-port", bind(u2, SA(ub), sizeof ub));
    STEP("udp-sendto-self", sendto(u2, "dgram", 5, 0, SA(ub), sizeof ub));
    {
        struct sockaddr_storage ss;
        socklen_t l = sizeof ss;
        memset(&ss, 0, sizeof ss);
        STEP("udp-recvfrom", recvfrom(u, buf, sizeof buf, 0, SA(ss), &l));
        printf("udp-recvfrom-addr: 0 - %s from-port-matches=%d\n", fmt_addr(&ss, l), port_of(&ss) == local_port(u2));
        STEP("udp-sendto-self-long", sendto(u2, "0123456789", 10, 0, SA(ub), sizeof ub));
        STEP("udp-recv-truncated", recv(u, buf, 4, 0));
        STEP("udp-recv-after-truncation-nb", recv(u, buf, sizeof buf, MSG_DONTWAIT));
        STEP("udp-sendto-self-trunc", sendto(u2, "0123456789", 10, 0, SA(ub), sizeof ub));
        STEP("udp-recv-msg-trunc", recv(u, buf, 4, MSG_TRUNC));
        STEP("udp-send-empty", sendto(u2, "", 0, 0, SA(ub), sizeof ub));
        STEP("udp-recv-empty", recv(u, buf, sizeof buf, 0));
    }
    STEP("udp-connect", connect(u2, SA(cl), sizeof cl));
    name_of("udp-getpeername-connected", u2, 1);
    STEP("udp-send-connected-closed-port", send(u2, "x", 1, 0));
    usleep(200000);
    STEP("udp-recv-after-icmp", recv(u2, buf, sizeof buf, MSG_DONTWAIT));
    getint("udp-so-error-after", u2, SOL_SOCKET, SO_ERROR);
    struct sockaddr unspec;
    memset(&unspec, 0, sizeof unspec);
    unspec.sa_family = AF_UNSPEC;
    STEP("udp-connect-unspec", connect(u2, &unspec, sizeof unspec));
    name_of("udp-getpeername-disconnected", u2, 1);
    close(u);
    close(u2);

    /* --- IPv6 */
    STEPFD(s6, "socket-tcp6", socket(AF_INET6, SOCK_STREAM, 0));
    getint("tcp6-so-domain", s6, SOL_SOCKET, SO_DOMAIN);
    getint("tcp6-v6only-default", s6, IPPROTO_IPV6, IPV6_V6ONLY);
    STEP("tcp6-set-v6only", setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    getint("tcp6-v6only", s6, IPPROTO_IPV6, IPV6_V6ONLY);
    STEP("tcp6-set-v6only-0", setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero));
    STEP("tcp6-bind-v4-addr", bind(s6, SA(lo0), sizeof lo0));
    struct sockaddr_in6 any6 = sin6("::", 0);
    STEP("tcp6-bind-any", bind(s6, SA(any6), sizeof any6));
    name_of("tcp6-getsockname", s6, 0);
    STEP("tcp6-set-v6only-after-bind", setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    STEP("tcp6-listen", listen(s6, 4));
    {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = sin4("127.0.0.1", local_port(s6));
        STEP("tcp4-connect-to-dualstack", connect(c, SA(to), sizeof to));
        struct sockaddr_storage ss;
        socklen_t l = sizeof ss;
        int a;
        STEPFD(a, "tcp6-accept-mapped", accept(s6, SA(ss), &l));
        printf("tcp6-accept-mapped-addr: 0 - %s\n", fmt_addr(&ss, l));
        close(a);
        close(c);
        int v6 = socket(AF_INET6, SOCK_STREAM, 0);
        setsockopt(v6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        struct sockaddr_in6 mapped = sin6("::ffff:127.0.0.1", local_port(s6));
        STEP("tcp6-v6only-connect-mapped", connect(v6, SA(mapped), sizeof mapped));
        close(v6);
    }
    close(s6);

    /* --- options in order with the data (set in band under the shim):
     * cork, header, body, uncork makes one segment train, nothing left
     * unsent at once (no cork timer, no Nagle stall), and getsockopt reads
     * back what was set */
    {
        int l2 = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = sin4("127.0.0.1", 0);
        bind(l2, SA(a), sizeof a);
        listen(l2, 4);
        struct sockaddr_in to = sin4("127.0.0.1", local_port(l2));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        STEP("cork-connect", connect(c, SA(to), sizeof to));
        int s;
        STEPFD(s, "cork-accept", accept(l2, NULL, NULL));
        unsigned segs0 = tcp_info_u32(c, TI_DATA_SEGS_IN);
        char hdr[200], body[1000], rb[1200];
        memset(hdr, 'h', sizeof hdr);
        memset(body, 'b', sizeof body);
        for (int round = 0; round < 3; round++) {
            STEP("cork-on", setsockopt(s, IPPROTO_TCP, TCP_CORK, &one, sizeof one));
            getint("cork-get-on", s, IPPROTO_TCP, TCP_CORK);
            STEP("cork-write-header", write(s, hdr, sizeof hdr));
            STEP("cork-write-body", write(s, body, sizeof body));
            STEP("cork-off", setsockopt(s, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero));
            getint("cork-get-off", s, IPPROTO_TCP, TCP_CORK);
            printf("cork-notsent-after-uncork: %u -\n", tcp_info_u32(s, TI_NOTSENT_BYTES));
            STEP("cork-recv", recv(c, rb, sizeof rb, MSG_WAITALL));
            unsigned segs1 = tcp_info_u32(c, TI_DATA_SEGS_IN);
            printf("cork-train-segments: %u -\n", segs1 - segs0);
            segs0 = segs1;
        }
        int two = 2, big = 40000;
        STEP("inband-nodelay", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &two, sizeof two));
        getint("inband-get-nodelay", s, IPPROTO_TCP, TCP_NODELAY);
        STEP("inband-keepalive", setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
        getint("inband-get-keepalive", s, SOL_SOCKET, SO_KEEPALIVE);
        int idle = 77, cnt = 5;
        STEP("inband-keepidle", setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle));
        getint("inband-get-keepidle", s, IPPROTO_TCP, TCP_KEEPIDLE);
        STEP("inband-keepidle-0", setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &zero, sizeof zero));
        STEP("inband-keepidle-big", setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &big, sizeof big));
        STEP("inband-keepidle-short", setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, 2));
        STEP("inband-keepcnt", setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt));
        getint("inband-get-keepcnt", s, IPPROTO_TCP, TCP_KEEPCNT);
        STEP("inband-keepcnt-200", setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &(int){200}, sizeof(int)));
        STEP("inband-user-timeout-neg", setsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &(int){-1}, sizeof(int)));
        STEP("inband-user-timeout", setsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &(int){1500}, sizeof(int)));
        getint("inband-get-user-timeout", s, IPPROTO_TCP, TCP_USER_TIMEOUT);
        {
            int v = -7;
            socklen_t l = 2;
            STEP("inband-get-keepidle-len2", getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l));
            printf("inband-get-keepidle-len2-out: %d - len=%u\n", v & 0xffff, (unsigned)l);
        }
        /* A copy of the fd reads what the original set. */
        int d = dup(s);
        getint("inband-dup-get-nodelay", d, IPPROTO_TCP, TCP_NODELAY);
        getint("inband-dup-get-keepidle", d, IPPROTO_TCP, TCP_KEEPIDLE);
        STEP("inband-dup-cork", setsockopt(d, IPPROTO_TCP, TCP_CORK, &one, sizeof one));
        getint("inband-orig-get-cork", s, IPPROTO_TCP, TCP_CORK);
        close(d);
        /* Data still flows both ways after all that. */
        STEP("inband-send-after", send(s, "tail", 4, MSG_NOSIGNAL));
        STEP("inband-uncork-after", setsockopt(s, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero));
        STEP("inband-recv-after", recv(c, rb, 4, MSG_WAITALL));
        STEP("inband-send-back", send(c, "back", 4, MSG_NOSIGNAL));
        STEP("inband-recv-back", recv(s, rb, 4, MSG_WAITALL));

        /* --- sendmsg control messages on TCP: Linux checks only the
         * SOL_SOCKET ones (sock_cmsg_send, every failure EINVAL), ignores
         * SCM_RIGHTS and SCM_CREDENTIALS, and the peer gets only the data.
         * Under the shim no descriptor may reach the driver: the pipe's
         * write end passed and then closed here leaves its read end at
         * end-of-file (the test also counts the driver's fds). */
        {
            int pfd[2];
            if (pipe(pfd) != 0)
                return 1;
            int fds[3] = { pfd[1], pfd[1], pfd[0] };
            cmsg_step("tcp-sendmsg-scm-rights", s, c, SOL_SOCKET, SCM_RIGHTS, fds, sizeof fds, 0);
            close(pfd[1]);
            fcntl(pfd[0], F_SETFL, O_NONBLOCK);
            STEP("tcp-sendmsg-scm-rights-no-copy-left", read(pfd[0], rb, 1));
            close(pfd[0]);
            struct ucred cr = { getpid(), getuid(), getgid() };
            cmsg_step("tcp-sendmsg-scm-credentials", s, c, SOL_SOCKET, SCM_CREDENTIALS, &cr, sizeof cr, 0);
            struct ucred bogus = { 1, 12345, 12345 };
            cmsg_step("tcp-sendmsg-scm-credentials-bogus", s, c, SOL_SOCKET, SCM_CREDENTIALS, &bogus, sizeof bogus, 0);
            int v = 5;
            cmsg_step("tcp-sendmsg-cmsg-len-short", s, c, SOL_SOCKET, SCM_RIGHTS, &v, sizeof v,
                      sizeof(struct cmsghdr) - 1);
            cmsg_step("tcp-sendmsg-cmsg-len-past-buffer", s, c, IPPROTO_IP, IP_TTL, &v, sizeof v,
                      CMSG_SPACE(sizeof v) + 8);
            cmsg_step("tcp-sendmsg-ip-ttl-ignored", s, c, IPPROTO_IP, IP_TTL, &v, sizeof v, 0);
            cmsg_step("tcp-sendmsg-unknown-level", s, c, 12345, 1, &v, sizeof v, 0);
            cmsg_step("tcp-sendmsg-so-mark", s, c, SOL_SOCKET, SO_MARK, &v, sizeof v, 0);
            long long big = 5;
            cmsg_step("tcp-sendmsg-so-mark-len8", s, c, SOL_SOCKET, SO_MARK, &big, sizeof big, 0);
            int prio = 3;
            cmsg_step("tcp-sendmsg-so-priority-3", s, c, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio, 0);
            prio = 9;
            cmsg_step("tcp-sendmsg-so-priority-9", s, c, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio, 0);
            unsigned ts = 0;
            cmsg_step("tcp-sendmsg-timestamping-0", s, c, SOL_SOCKET, SO_TIMESTAMPING, &ts, sizeof ts, 0);
            ts = 4; /* SOF_TIMESTAMPING_RX_HARDWARE: not a transmit flag */
            cmsg_step("tcp-sendmsg-timestamping-rx", s, c, SOL_SOCKET, SO_TIMESTAMPING, &ts, sizeof ts, 0);
            ts = 2; /* SOF_TIMESTAMPING_TX_SOFTWARE */
            cmsg_step("tcp-sendmsg-timestamping-tx", s, c, SOL_SOCKET, SO_TIMESTAMPING, &ts, sizeof ts, 0);
            cmsg_step("tcp-sendmsg-txtime-unset", s, c, SOL_SOCKET, SCM_TXTIME, &big, sizeof big, 0);
            cmsg_step("tcp-sendmsg-so-keepalive-cmsg", s, c, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v, 0);
        }
        close(s);
        close(c);
        close(l2);
    }

    /* --- options set before connect/listen: answered at once under the
     * shim, carried with the request; an accepted connection inherits its
     * listener's */
    {
        int l3 = socket(AF_INET, SOCK_STREAM, 0);
        int idle = 91;
        STEP("pre-listen-nodelay", setsockopt(l3, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
        STEP("pre-listen-keepalive", setsockopt(l3, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
        STEP("pre-listen-keepidle", setsockopt(l3, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle));
        STEP("pre-listen-keepidle-bad", setsockopt(l3, IPPROTO_TCP, TCP_KEEPIDLE, &zero, sizeof zero));
        getint("pre-listen-get-keepidle", l3, IPPROTO_TCP, TCP_KEEPIDLE);
        struct sockaddr_in a = sin4("127.0.0.1", 0);
        bind(l3, SA(a), sizeof a);
        STEP("pre-listen-listen", listen(l3, 4));
        getint("listener-get-nodelay", l3, IPPROTO_TCP, TCP_NODELAY);
        struct sockaddr_in to = sin4("127.0.0.1", local_port(l3));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        int cnt = 4;
        STEP("pre-connect-keepcnt", setsockopt(c, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt));
        STEP("pre-connect-nodelay", setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
        getint("pre-connect-get-nodelay", c, IPPROTO_TCP, TCP_NODELAY);
        STEP("pre-connect-connect", connect(c, SA(to), sizeof to));
        getint("connected-get-keepcnt", c, IPPROTO_TCP, TCP_KEEPCNT);
        int s;
        STEPFD(s, "inherit-accept", accept(l3, NULL, NULL));
        getint("accepted-inherits-nodelay", s, IPPROTO_TCP, TCP_NODELAY);
        getint("accepted-inherits-keepalive", s, SOL_SOCKET, SO_KEEPALIVE);
        getint("accepted-inherits-keepidle", s, IPPROTO_TCP, TCP_KEEPIDLE);
        /* What the instance applied, read back through a dup (asks it). */
        int d = dup(c);
        getint("pre-connect-applied-keepcnt", d, IPPROTO_TCP, TCP_KEEPCNT);
        getint("pre-connect-applied-nodelay", d, IPPROTO_TCP, TCP_NODELAY);
        close(d);
        close(s);
        close(c);
        close(l3);
    }

    /* --- writes after a local shutdown(SHUT_WR) and after the peer's
     * reset: EPIPE, and SIGPIPE unless MSG_NOSIGNAL (the error the reset
     * left is read first with SO_ERROR, so every later write is EPIPE) */
    {
        struct sigaction sa = {.sa_handler = count_sigpipe}, old;
        sigaction(SIGPIPE, &sa, &old);
        int l4 = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = sin4("127.0.0.1", 0);
        bind(l4, SA(a), sizeof a);
        listen(l4, 4);
        struct sockaddr_in to = sin4("127.0.0.1", local_port(l4));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        STEP("epipe-connect", connect(c, SA(to), sizeof to));
        int s = accept(l4, NULL, NULL);
        STEP("epipe-shut-wr", shutdown(c, SHUT_WR));
        sigpipes = 0;
        STEP("write-after-shut-wr-nosignal", send(c, "x", 1, MSG_NOSIGNAL));
        printf("write-after-shut-wr-nosignal-sigpipes: %d -\n", sigpipes);
        STEP("write-after-shut-wr", write(c, "x", 1));
        printf("write-after-shut-wr-sigpipes: %d -\n", sigpipes);
        STEP("read-after-shut-wr-peer-eof", recv(s, buf, sizeof buf, 0));
        close(s);
        close(c);
        /* The peer resets (SO_LINGER 0). */
        c = socket(AF_INET, SOCK_STREAM, 0);
        STEP("reset-connect", connect(c, SA(to), sizeof to));
        s = accept(l4, NULL, NULL);
        STEP("reset-send-before", send(c, "ping", 4, MSG_NOSIGNAL));
        STEP("reset-recv-before", recv(s, buf, 4, MSG_WAITALL));
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(s);
        /* Wait until the reset has arrived. */
        wait_hangup(c);
        getint("reset-so-error", c, SOL_SOCKET, SO_ERROR);
        sigpipes = 0;
        STEP("write-after-reset-nosignal", send(c, "lost", 4, MSG_NOSIGNAL));
        printf("write-after-reset-nosignal-sigpipes: %d -\n", sigpipes);
        STEP("write-after-reset", write(c, "lost", 4));
        printf("write-after-reset-sigpipes: %d -\n", sigpipes);
        STEP("writev-after-reset", writev(c, &(struct iovec){.iov_base = "lost", .iov_len = 4}, 1));
        STEP("read-after-reset", recv(c, buf, sizeof buf, MSG_DONTWAIT));
        close(c);
        /* Again, but the first write meets the reset's error: ECONNRESET
         * without SIGPIPE, then EPIPE with it. */
        c = socket(AF_INET, SOCK_STREAM, 0);
        STEP("reset2-connect", connect(c, SA(to), sizeof to));
        s = accept(l4, NULL, NULL);
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(s);
        wait_hangup(c);
        sigpipes = 0;
        STEP("reset2-first-write", write(c, "lost", 4));
        printf("reset2-first-write-sigpipes: %d -\n", sigpipes);
        STEP("reset2-second-write", write(c, "lost", 4));
        printf("reset2-second-write-sigpipes: %d -\n", sigpipes);
        close(c);
        close(l4);
        sigaction(SIGPIPE, &old, NULL);
    }

    close(pp[0]);
    close(pp[1]);
    printf("end: 0 -\n");
    return 0;
}
