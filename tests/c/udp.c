/* UDP request/response. Modes:
 *   udp server FAMILY PORT N   bind ([::1] or 127.0.0.1):PORT, answer N
 *                              datagrams with "echo:<payload>", print each
 *   udp client FAMILY PORT N   send N requests (unconnected sendto, then
 *                              connected send), print each reply
 *   udp self FAMILY            both ends in this process (a forked
 *                              server, its transcript on stderr)
 * FAMILY is 4 or 6. Output is a transcript without port numbers. */
#include "common.h"
#include <poll.h>

static socklen_t mkaddr(int f, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (f == 6) {
        struct sockaddr_in6 a = sin6("::1", port);
        memcpy(ss, &a, sizeof a);
        return sizeof a;
    }
    struct sockaddr_in a = sin4("127.0.0.1", port);
    memcpy(ss, &a, sizeof a);
    return sizeof a;
}

static int wait_in(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 5000) == 1 && (p.revents & POLLIN);
}

static FILE *sout;

static int server(int f, int port, int n, int ready_fd)
{
    if (!sout)
        sout = stdout;
    int s = socket(f == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_storage a;
    socklen_t al = mkaddr(f, port, &a);
    if (bind(s, SA(a), al) != 0) {
        fprintf(sout, "server: bind failed: %s\n", ename(errno));
        return 1;
    }
    if (ready_fd >= 0) {
        if (write(ready_fd, "r", 1) != 1)
            return 1;
    } else {
        fprintf(sout, "server: ready\n");
        fflush(sout);
    }
    for (int i = 0; i < n; i++) {
        char buf[2048];
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        if (!wait_in(s)) {
            fprintf(sout, "server: timeout waiting for request %d\n", i);
            return 1;
        }
        ssize_t r = recvfrom(s, buf, sizeof buf - 1, 0, SA(from), &fl);
        if (r < 0) {
            fprintf(sout, "server: recvfrom: %s\n", ename(errno));
            return 1;
        }
        buf[r] = 0;
        fprintf(sout, "server: got %zd bytes \"%.20s\" from %s\n", r, buf, fmt_addr(&from, fl));
        char out[2100];
        int ol = snprintf(out, sizeof out, "echo:%s", buf);
        ssize_t w = sendto(s, out, ol, 0, SA(from), fl);
        fprintf(sout, "server: sendto %zd\n", w);
        fflush(sout);
    }
    close(s);
    return 0;
}

static int client(int f, int port, int n)
{
    int s = socket(f == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_storage a;
    socklen_t al = mkaddr(f, port, &a);
    for (int i = 0; i < n; i++) {
        char req[64], buf[2048];
        int connected = i >= n / 2;
        if (connected && i == n / 2) {
            int r = connect(s, SA(a), al);
            printf("client: connect %d\n", r);
        }
        int l = snprintf(req, sizeof req, "ping-%d", i);
        ssize_t w = connected ? send(s, req, l, 0) : sendto(s, req, l, 0, SA(a), al);
        printf("client: %s %zd\n", connected ? "send" : "sendto", w);
        if (!wait_in(s)) {
            printf("client: timeout waiting for reply %d\n", i);
            return 1;
        }
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(s, buf, sizeof buf - 1, 0, SA(from), &fl);
        if (r < 0) {
            printf("client: recvfrom: %s\n", ename(errno));
            return 1;
        }
        buf[r] = 0;
        printf("client: reply %zd \"%s\" from %s port-ok=%d\n", r, buf, fmt_addr(&from, fl),
               port_of(&from) == port);
        fflush(stdout);
    }
    /* A 1400-byte datagram keeps its boundary. */
    char big[1400];
    memset(big, 'B', sizeof big);
    big[sizeof big - 1] = 0;
    ssize_t w = sendto(s, big, sizeof big - 1, 0, SA(a), al);
    printf("client: big sendto %zd\n", w);
    return 0;
}

int main(int argc, char **argv)
{
    guard_init();
    alarm(30);
    if (argc >= 5 && !strcmp(argv[1], "server"))
        return server(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), -1);
    if (argc >= 5 && !strcmp(argv[1], "client")) {
        int r = client(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        return r;
    }
    if (argc >= 3 && !strcmp(argv[1], "self")) {
        int f = atoi(argv[2]);
        /* Find a free port with a throwaway socket (through whatever
         * stack this process uses). */
        int t = socket(f == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_storage a;
        socklen_t al = mkaddr(f, 0, &a);
        bind(t, SA(a), al);
        int port = local_port(t);
        close(t);
        int pfd[2];
        if (pipe(pfd) != 0)
            return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            sout = stderr; /* the server's transcript goes to stderr */
            _exit(server(f, port, 5, pfd[1]));
        }
        close(pfd[1]);
        char c;
        if (read(pfd[0], &c, 1) != 1) {
            printf("self: server did not start\n");
            return 1;
        }
        fflush(stdout);
        int r = client(f, port, 4);
        return r;
    }
    fprintf(stderr, "usage: udp server|client FAMILY PORT N | udp self FAMILY\n");
    return 2;
}
