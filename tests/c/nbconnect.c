/* Non-blocking connect semantics:
 *  - to a listener: EINPROGRESS, then EPOLLOUT on completion, SO_ERROR 0,
 *    data flows;
 *  - to a closed port: EINPROGRESS, EPOLLOUT, SO_ERROR ECONNREFUSED (read
 *    once, then 0);
 *  - connect again while in progress / after completion: EALREADY/EISCONN;
 *  - blocking connect to a closed port: ECONNREFUSED.
 * Usage: nbconnect CLOSED_PORT */
#include "common.h"
#include <poll.h>
#include <sys/epoll.h>

static void soerr(const char *what, int fd)
{
    int v = -1;
    socklen_t l = sizeof v;
    int r = getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l);
    printf("%s: getsockopt %d SO_ERROR=%s\n", what, r, v ? ename(v) : "0");
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int closed = atoi(argv[1]);
    guard_init();
    alarm(30);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin4("127.0.0.1", 0);
    bind(l, SA(la), sizeof la);
    listen(l, 8);
    struct sockaddr_in to = sin4("127.0.0.1", local_port(l));

    /* 1: success */
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int r = connect(c, SA(to), sizeof to);
    printf("connect: %d %s\n", r, r ? ename(errno) : "-");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 5000);
    printf("epoll_wait: %d out=%d err=%d hup=%d\n", n, n > 0 && (out[0].events & EPOLLOUT) ? 1 : 0,
           n > 0 && (out[0].events & EPOLLERR) ? 1 : 0, n > 0 && (out[0].events & EPOLLHUP) ? 1 : 0);
    soerr("connected", c);
    r = connect(c, SA(to), sizeof to);
    printf("connect again: %d %s\n", r, r ? ename(errno) : "-");
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    r = getpeername(c, SA(ss), &sl);
    printf("getpeername: %d %s\n", r, fmt_addr(&ss, sl));
    int a = accept(l, NULL, NULL);
    printf("accept: %s\n", a >= 0 ? "fd" : ename(errno));
    printf("send: %zd\n", send(c, "abc", 3, 0));
    char buf[16] = {0};
    ssize_t rr = recv(a, buf, 3, MSG_WAITALL);
    printf("recv: %zd %s\n", rr, buf);
    /* Nothing to read yet on the non-blocking client. */
    r = recv(c, buf, sizeof buf, 0);
    printf("recv empty: %d %s\n", r, r < 0 ? ename(errno) : "-");
    close(a);
    close(c);

    /* 2: refused */
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in cl = sin4("127.0.0.1", closed);
    r = connect(c, SA(cl), sizeof cl);
    printf("refused connect: %d %s\n", r, r ? ename(errno) : "-");
    ev.data.fd = c;
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    n = epoll_wait(ep, out, 4, 5000);
    printf("refused epoll_wait: %d out=%d\n", n, n > 0 && (out[0].events & EPOLLOUT) ? 1 : 0);
    soerr("refused", c);
    soerr("refused again", c);
    r = connect(c, SA(cl), sizeof cl);
    printf("refused connect again: %d %s\n", r, r ? ename(errno) : "-");
    close(c);

    /* 3: refused, learned through poll(), then read() */
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    r = connect(c, SA(cl), sizeof cl);
    printf("refused2 connect: %d %s\n", r, r ? ename(errno) : "-");
    struct pollfd pf = {c, POLLOUT, 0};
    n = poll(&pf, 1, 5000);
    printf("refused2 poll: %d pollout=%d\n", n, (pf.revents & POLLOUT) ? 1 : 0);
    r = read(c, buf, sizeof buf);
    printf("refused2 read: %d %s\n", r, r < 0 ? ename(errno) : "-");
    r = read(c, buf, sizeof buf);
    printf("refused2 read again: %d %s\n", r, r < 0 ? ename(errno) : "-");
    close(c);

    /* 4: blocking refused */
    c = socket(AF_INET, SOCK_STREAM, 0);
    r = connect(c, SA(cl), sizeof cl);
    printf("blocking refused: %d %s\n", r, r ? ename(errno) : "-");
    soerr("blocking refused", c);
    close(c);

    /* 5: IPv6 non-blocking connect */
    int l6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 l6a = sin6("::1", 0);
    bind(l6, SA(l6a), sizeof l6a);
    listen(l6, 4);
    struct sockaddr_in6 to6 = sin6("::1", local_port(l6));
    c = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
    r = connect(c, SA(to6), sizeof to6);
    printf("v6 connect: %d %s\n", r, r ? ename(errno) : "-");
    pf.fd = c;
    pf.events = POLLOUT;
    n = poll(&pf, 1, 5000);
    printf("v6 poll: %d pollout=%d\n", n, (pf.revents & POLLOUT) ? 1 : 0);
    soerr("v6", c);
    close(c);
    close(l6);
    close(l);
    return 0;
}
