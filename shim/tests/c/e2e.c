/* Socket semantics smoke program. Prints "<step> <value>" lines that must
 * be the same natively and under libshim.so + INS (no ports, no timings).
 * With argv[1] == "inherited" it checks an fd inherited across exec. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void out(const char *step, long v) { printf("%s %ld\n", step, v); fflush(stdout); }
/* Return value class and errno: "ok" → 0, failure → -errno. */
static void res(const char *step, long rc) { out(step, rc < 0 ? -errno : 0); }

static struct sockaddr_in lo4(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int port_of(int fd) {
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &l) < 0) return -1;
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                          : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int listener4(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = lo4(0);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 16) < 0) { perror("listener"); exit(1); }
    return l;
}

static int optint(int fd, int level, int name) {
    int v = -12345; socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) < 0) return -errno;
    return v;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    char buf[256];
    if (argc == 3 && strcmp(argv[1], "inherited") == 0) {
        int fd = atoi(argv[2]);
        out("exec_so_type", optint(fd, SOL_SOCKET, SO_TYPE));
        out("exec_so_domain", optint(fd, SOL_SOCKET, SO_DOMAIN));
        struct sockaddr_in p; socklen_t pl = sizeof p;
        res("exec_getpeername", getpeername(fd, (struct sockaddr *)&p, &pl));
        out("exec_peer_family", p.sin_family);
        out("exec_write", write(fd, "exec", 4));
        return 0;
    }

    /* 1. TCP v4: nonblocking connect, accept4 flags, data, addresses, half-close. */
    int l = listener4();
    int port = port_of(l);
    out("listener_so_type", optint(l, SOL_SOCKET, SO_TYPE));
    out("listener_so_domain", optint(l, SOL_SOCKET, SO_DOMAIN));
    out("listener_so_protocol", optint(l, SOL_SOCKET, SO_PROTOCOL));
    out("listener_acceptconn", optint(l, SOL_SOCKET, SO_ACCEPTCONN));
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = lo4(port);
    int r = connect(c, (struct sockaddr *)&a, sizeof a);
    out("nb_connect_ok_or_inprogress", r == 0 || errno == EINPROGRESS);
    struct pollfd pf = {.fd = c, .events = POLLOUT};
    out("nb_connect_pollout", poll(&pf, 1, 5000) == 1 && (pf.revents & POLLOUT) != 0);
    out("nb_connect_so_error", optint(c, SOL_SOCKET, SO_ERROR));
    res("connect_again_eisconn", connect(c, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in peer; socklen_t pl = 4; /* truncated on purpose */
    memset(&peer, 0, sizeof peer);
    int s = accept4(l, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    out("accept4_ok", s >= 0);
    out("accept4_addrlen_real", pl);
    out("accept4_family_truncated", peer.sin_family);
    out("accept4_nonblock", (fcntl(s, F_GETFL) & O_NONBLOCK) != 0);
    out("accept4_cloexec", (fcntl(s, F_GETFD) & FD_CLOEXEC) != 0);
    out("client_cloexec", (fcntl(c, F_GETFD) & FD_CLOEXEC) != 0);
    struct sockaddr_in pn; socklen_t pnl = sizeof pn;
    getpeername(s, (struct sockaddr *)&pn, &pnl);
    out("peer_is_client_port", ntohs(pn.sin_port) == port_of(c));
    out("send", send(c, "hello", 5, 0));
    pf.fd = s; pf.events = POLLIN;
    poll(&pf, 1, 5000);
    out("recv", recv(s, buf, sizeof buf, 0));
    res("recv_eagain", recv(s, buf, sizeof buf, 0));
    socklen_t al = sizeof a;
    out("recvfrom_tcp_addrlen", (send(c, "x", 1, 0), poll(&pf, 1, 5000), recvfrom(s, buf, 8, 0, (struct sockaddr *)&a, &al), (long)al));
    res("shutdown_wr", shutdown(c, SHUT_WR));
    poll(&pf, 1, 5000);
    out("read_after_peer_shutdown", read(s, buf, sizeof buf));
    out("server_write_after_half_close", write(s, "back", 4));
    int cfl = fcntl(c, F_GETFL); fcntl(c, F_SETFL, cfl & ~O_NONBLOCK);
    out("client_read_back", read(c, buf, sizeof buf));
    close(s);
    out("client_read_eof", read(c, buf, sizeof buf));
    close(c);

    /* 2. Connect to a closed port: nonblocking then blocking. The port was
       bound and never listened on: under INS, closing a *listener* reaches
       the instances asynchronously, so a connect within that window could
       still be accepted (a known gap, listed in the README). */
    int tmp = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in b0 = lo4(0);
    bind(tmp, (struct sockaddr *)&b0, sizeof b0);
    int closed = port_of(tmp); close(tmp);
    a = lo4(closed);
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    r = connect(c, (struct sockaddr *)&a, sizeof a);
    out("refused_nb_connect", r == 0 ? 0 : -errno == -EINPROGRESS ? 1 : -errno);
    pf.fd = c; pf.events = POLLOUT;
    out("refused_pollout", poll(&pf, 1, 5000) == 1);
    out("refused_so_error", optint(c, SOL_SOCKET, SO_ERROR));
    out("refused_so_error_cleared", optint(c, SOL_SOCKET, SO_ERROR));
    close(c);
    c = socket(AF_INET, SOCK_STREAM, 0);
    res("refused_blocking_connect", connect(c, (struct sockaddr *)&a, sizeof a));
    close(c);

    /* 3. Errors. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    res("recv_unconnected", recv(c, buf, 1, 0));
    res("send_unconnected", send(c, buf, 1, MSG_NOSIGNAL));
    struct sockaddr_in pe; socklen_t pel = sizeof pe;
    res("getpeername_unconnected", getpeername(c, (struct sockaddr *)&pe, &pel));
    res("accept_not_listening", accept(c, NULL, NULL));
    res("getsockopt_unknown", getsockopt(c, SOL_SOCKET, 9999, buf, &pel));
    a = lo4(0);
    res("bind_short", bind(c, (struct sockaddr *)&a, 8));
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    res("bind_wrong_family", bind(c, (struct sockaddr *)&a6, sizeof a6));
    res("bind_ok", bind(c, (struct sockaddr *)&a, sizeof a));
    res("bind_twice", bind(c, (struct sockaddr *)&a, sizeof a));
    res("shutdown_unconnected", shutdown(c, SHUT_RDWR));
    res("shutdown_bad_how", shutdown(c, 7));
    close(c);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    res("listen_udp", listen(u, 1));
    res("send_udp_unconnected", send(u, "x", 1, 0));
    out("udp_so_type", optint(u, SOL_SOCKET, SO_TYPE));
    close(u);

    /* 4. UDP both ways. */
    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    a = lo4(0);
    bind(u1, (struct sockaddr *)&a, sizeof a);
    bind(u2, (struct sockaddr *)&a, sizeof a);
    a = lo4(port_of(u1));
    out("udp_sendto", sendto(u2, "ping!", 5, 0, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in src; socklen_t sl = sizeof src;
    pf.fd = u1; pf.events = POLLIN;
    poll(&pf, 1, 5000);
    out("udp_recvfrom", recvfrom(u1, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&src, &sl));
    out("udp_src_len", sl);
    out("udp_src_is_u2", ntohs(src.sin_port) == port_of(u2));
    out("udp_reply", sendto(u1, "pong!!", 6, 0, (struct sockaddr *)&src, sl));
    res("udp_connect", connect(u2, (struct sockaddr *)&a, sizeof a));
    pf.fd = u2;
    poll(&pf, 1, 5000);
    out("udp_read_reply", recv(u2, buf, sizeof buf, MSG_DONTWAIT));
    out("udp_connected_send", send(u2, "abc", 3, 0));
    pf.fd = u1; poll(&pf, 1, 5000);
    out("udp_trunc", recv(u1, buf, 2, MSG_DONTWAIT));
    struct iovec iv[2] = {{buf, 1}, {buf + 1, 10}};
    struct msghdr mh = {.msg_name = &src, .msg_namelen = sizeof src, .msg_iov = iv, .msg_iovlen = 2};
    sendto(u2, "0123", 4, 0, NULL, 0);
    poll(&pf, 1, 5000);
    out("udp_recvmsg", recvmsg(u1, &mh, MSG_DONTWAIT));
    out("udp_recvmsg_namelen", mh.msg_namelen);
    out("udp_recvmsg_flags", mh.msg_flags);
    res("udp_recv_eagain", recv(u1, buf, sizeof buf, MSG_DONTWAIT));
    close(u1); close(u2);

    /* 5. IPv6. */
    int l6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 b6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    res("v6_bind", bind(l6, (struct sockaddr *)&b6, sizeof b6));
    res("v6_listen", listen(l6, 4));
    b6.sin6_port = htons(port_of(l6));
    int c6 = socket(AF_INET6, SOCK_STREAM, 0);
    res("v6_connect", connect(c6, (struct sockaddr *)&b6, sizeof b6));
    struct sockaddr_in6 p6; socklen_t p6l = sizeof p6;
    int s6 = accept(l6, (struct sockaddr *)&p6, &p6l);
    out("v6_accept_len", p6l);
    out("v6_accept_family", p6.sin6_family);
    out("v6_write", write(c6, "six", 3));
    out("v6_read", read(s6, buf, sizeof buf));
    close(c6); close(s6); close(l6);

    /* 6. fork: the child uses the inherited listener's port; the parent accepts. */
    pid_t pid = fork();
    if (pid == 0) {
        int cc = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in ca = lo4(port);
        if (connect(cc, (struct sockaddr *)&ca, sizeof ca) < 0) _exit(2);
        if (write(cc, "child", 5) != 5) _exit(3);
        close(cc);
        _exit(0);
    }
    int fs = accept(l, NULL, NULL);
    out("fork_accept", fs >= 0);
    int got = 0, n;
    while ((n = read(fs, buf + got, sizeof buf - got)) > 0) got += n;
    out("fork_read", got);
    int st; waitpid(pid, &st, 0);
    out("fork_child_exit", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    close(fs);

    /* 7. exec: an accepted connection inherited by a new program image. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    a = lo4(port);
    connect(c, (struct sockaddr *)&a, sizeof a);
    s = accept(l, NULL, NULL);
    pid = fork();
    if (pid == 0) {
        char fdstr[16]; snprintf(fdstr, sizeof fdstr, "%d", s);
        execl("/proc/self/exe", argv[0], "inherited", fdstr, (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    out("exec_child_exit", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    out("exec_data_read", read(c, buf, sizeof buf));
    close(s); close(c); close(l);
    return 0;
}
