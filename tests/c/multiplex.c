/* select/poll/epoll (level- and edge-triggered) on INS sockets: a listener
 * and a connected pair in one process. Readiness is awaited with generous
 * timeouts (data travels through the instance) and absence of readiness is
 * checked with short ones. */
#include "common.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>

static const char *evs(unsigned e)
{
    static char b[64];
    snprintf(b, sizeof b, "%s%s%s%s%s", e & EPOLLIN ? "IN " : "", e & EPOLLOUT ? "OUT " : "",
             e & EPOLLRDHUP ? "RDHUP " : "", e & EPOLLHUP ? "HUP " : "", e & EPOLLERR ? "ERR " : "");
    return b;
}

static int sel_read(int fd, int ms)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int n = select(fd + 1, &r, NULL, NULL, &tv);
    return n > 0 && FD_ISSET(fd, &r);
}

static int sel_write(int fd, int ms)
{
    fd_set w;
    FD_ZERO(&w);
    FD_SET(fd, &w);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int n = select(fd + 1, NULL, &w, NULL, &tv);
    return n > 0 && FD_ISSET(fd, &w);
}

int main(void)
{
    guard_init();
    alarm(60);
    char buf[64];
    int n;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin4("127.0.0.1", 0);
    bind(l, SA(la), sizeof la);
    listen(l, 8);
    struct sockaddr_in to = sin4("127.0.0.1", local_port(l));

    /* select on the listener */
    printf("select listener before connect: %d\n", sel_read(l, 200));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    printf("connect: %d\n", connect(c, SA(to), sizeof to));
    printf("select listener after connect: %d\n", sel_read(l, 5000));
    struct pollfd pl = {l, POLLIN, 0};
    n = poll(&pl, 1, 5000);
    printf("poll listener: %d revents-in=%d\n", n, (pl.revents & POLLIN) ? 1 : 0);
    int a = accept(l, NULL, NULL);
    printf("accept: %s\n", a >= 0 ? "fd" : ename(errno));
    printf("select listener after accept: %d\n", sel_read(l, 200));
    printf("select client writable: %d\n", sel_write(c, 5000));

    /* poll */
    struct pollfd pa = {a, POLLIN, 0};
    printf("poll accepted idle: %d\n", poll(&pa, 1, 200));
    send(c, "0123456789", 10, 0);
    pa.revents = 0;
    n = poll(&pa, 1, 5000);
    printf("poll accepted after send: %d revents-in=%d\n", n, (pa.revents & POLLIN) ? 1 : 0);
    printf("select accepted readable: %d\n", sel_read(a, 5000));

    /* epoll level-triggered */
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = a}, out[8];
    epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev);
    n = epoll_wait(ep, out, 8, 5000);
    printf("epoll LT: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    printf("read 4: %zd\n", read(a, buf, 4));
    n = epoll_wait(ep, out, 8, 1000);
    printf("epoll LT after partial read: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    printf("read 6: %zd\n", read(a, buf, 6));
    n = epoll_wait(ep, out, 8, 200);
    printf("epoll LT drained: %d\n", n);

    /* epoll edge-triggered */
    ev.events = EPOLLIN | EPOLLET | EPOLLRDHUP;
    printf("epoll_ctl MOD to ET: %d\n", epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
    send(c, "abcdefghij", 10, 0);
    n = epoll_wait(ep, out, 8, 5000);
    printf("epoll ET: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    printf("read 4: %zd\n", read(a, buf, 4));
    n = epoll_wait(ep, out, 8, 300);
    printf("epoll ET after partial read (no new data): %d\n", n);
    send(c, "K", 1, 0);
    n = epoll_wait(ep, out, 8, 5000);
    printf("epoll ET new data: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    printf("read rest: %zd\n", read(a, buf, sizeof buf));

    /* the same fd in two epoll sets; EPOLLOUT */
    int ep2 = epoll_create1(0);
    struct epoll_event ev2 = {.events = EPOLLIN, .data.fd = a};
    printf("second epoll set add: %d\n", epoll_ctl(ep2, EPOLL_CTL_ADD, a, &ev2));
    struct epoll_event evo = {.events = EPOLLOUT, .data.fd = c};
    epoll_ctl(ep2, EPOLL_CTL_ADD, c, &evo);
    n = epoll_wait(ep2, out, 8, 5000);
    printf("second set: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    epoll_ctl(ep2, EPOLL_CTL_DEL, c, NULL);
    send(c, "z", 1, 0);
    n = epoll_wait(ep2, out, 8, 5000);
    printf("second set sees data: %d\n", n == 1 && out[0].data.fd == a && (out[0].events & EPOLLIN));
    n = epoll_wait(ep, out, 8, 5000);
    printf("first set (ET) sees data: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    printf("read: %zd\n", read(a, buf, sizeof buf));

    /* cascaded epoll: ep2 inside ep3 */
    int ep3 = epoll_create1(0);
    struct epoll_event ev3 = {.events = EPOLLIN, .data.fd = ep2};
    printf("cascade add: %d\n", epoll_ctl(ep3, EPOLL_CTL_ADD, ep2, &ev3));
    n = epoll_wait(ep3, out, 8, 200);
    printf("cascade idle: %d\n", n);
    send(c, "y", 1, 0);
    n = epoll_wait(ep3, out, 8, 5000);
    printf("cascade ready: %d\n", n);
    printf("read: %zd\n", read(a, buf, sizeof buf));

    /* peer half-close and close */
    shutdown(c, SHUT_WR);
    n = epoll_wait(ep, out, 8, 5000);
    printf("epoll after peer SHUT_WR: %d %s\n", n, n > 0 ? evs(out[0].events) : "");
    printf("read eof: %zd\n", read(a, buf, sizeof buf));
    pa.events = POLLIN | POLLRDHUP;
    pa.revents = 0;
    n = poll(&pa, 1, 1000);
    printf("poll after eof: %d in=%d rdhup=%d\n", n, (pa.revents & POLLIN) ? 1 : 0,
           (pa.revents & POLLRDHUP) ? 1 : 0);
    send(a, "bye", 3, 0);
    char b2[8] = {0};
    ssize_t rr = recv(c, b2, 3, MSG_WAITALL);
    printf("client reads after its SHUT_WR: %zd %s\n", rr, b2);
    close(a);
    struct pollfd pc = {c, POLLIN, 0};
    n = poll(&pc, 1, 5000);
    printf("poll client after peer close: %d in=%d\n", n, (pc.revents & POLLIN) ? 1 : 0);
    printf("client read eof: %zd\n", read(c, buf, sizeof buf));
    close(c);
    close(l);
    return 0;
}
