/* IPv6 listen and connect in one process: a listener on [::1], a client
 * connecting to it, data both ways, addresses of both ends; then a
 * dual-stack listener on [::] taking an IPv4 client (v4-mapped peer).
 * Also "ipv6 server PORT": accept one connection on [::1]:PORT, read a
 * line, answer "hello <line>" (for a native client). */
#include "common.h"

static int tcp_pair(const char *listen_ip, int v4client, int v6only)
{
    int one = 1;
    int l = socket(AF_INET6, SOCK_STREAM, 0);
    setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in6 la = sin6(listen_ip, 0);
    printf("bind %s: %d\n", listen_ip, bind(l, SA(la), sizeof la));
    printf("listen: %d\n", listen(l, 8));
    int port = local_port(l);
    printf("listener port>0: %d\n", port > 0);
    int c;
    int r;
    if (v4client) {
        c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = sin4("127.0.0.1", port);
        r = connect(c, SA(to), sizeof to);
    } else {
        c = socket(AF_INET6, SOCK_STREAM, 0);
        struct sockaddr_in6 to = sin6("::1", port);
        r = connect(c, SA(to), sizeof to);
    }
    printf("connect: %d %s\n", r, r ? ename(errno) : "-");
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int a = accept(l, SA(ss), &sl);
    printf("accept: %s peer %s\n", a >= 0 ? "fd" : ename(errno), fmt_addr(&ss, sl));
    struct sockaddr_storage cs;
    socklen_t cl = sizeof cs;
    getsockname(c, SA(cs), &cl);
    printf("client local %s; accepted peer port matches: %d\n", fmt_addr(&cs, cl), port_of(&cs) == port_of(&ss));
    sl = sizeof ss;
    getsockname(a, SA(ss), &sl);
    printf("accepted local %s port matches listener: %d\n", fmt_addr(&ss, sl), port_of(&ss) == port);
    sl = sizeof ss;
    getpeername(c, SA(ss), &sl);
    printf("client peer %s\n", fmt_addr(&ss, sl));
    char buf[64] = {0};
    printf("send: %zd\n", send(c, "ping6", 5, 0));
    ssize_t rr = recv(a, buf, 5, MSG_WAITALL);
    printf("recv: %zd\n", rr);
    printf("data: %s\n", buf);
    printf("send back: %zd\n", send(a, "pong6", 5, 0));
    memset(buf, 0, sizeof buf);
    rr = recv(c, buf, 5, MSG_WAITALL);
    printf("recv back: %zd %s\n", rr, buf);
    close(c);
    printf("eof: %zd\n", recv(a, buf, sizeof buf, 0));
    close(a);
    close(l);
    return 0;
}

int main(int argc, char **argv)
{
    guard_init();
    alarm(30);
    if (argc >= 3 && !strcmp(argv[1], "server")) {
        int one = 1;
        int l = socket(AF_INET6, SOCK_STREAM, 0);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in6 la = sin6("::1", atoi(argv[2]));
        if (bind(l, SA(la), sizeof la) || listen(l, 8)) {
            printf("server: %s\n", ename(errno));
            return 1;
        }
        printf("server: ready\n");
        fflush(stdout);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int a = accept(l, SA(ss), &sl);
        printf("server: accepted peer %s\n", fmt_addr(&ss, sl));
        char buf[128] = {0};
        ssize_t n = recv(a, buf, sizeof buf - 1, 0);
        char out[200];
        int ol = snprintf(out, sizeof out, "hello %.*s", (int)(n > 0 ? n : 0), buf);
        ssize_t w = send(a, out, ol, 0);
        printf("server: got %zd, sent %zd\n", n, w);
        close(a);
        return 0;
    }
    printf("== v6 listener on ::1, v6 client\n");
    tcp_pair("::1", 0, 1);
    printf("== dual-stack listener on ::, v4 client\n");
    tcp_pair("::", 1, 0);
    return 0;
}
