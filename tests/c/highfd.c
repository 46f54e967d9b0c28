/* INS sockets with fd numbers above 1024 (FD_SETSIZE) driven by epoll:
 * occupy the low fds, then a listener and N client connections echo data;
 * one socket is also dup2()ed to a high fd number and used through it.
 * Usage: highfd N */
#include "common.h"
#include <sys/epoll.h>
#include <sys/resource.h>

int main(int argc, char **argv)
{
    guard_init();
    alarm(60);
    int n = argc > 1 ? atoi(argv[1]) : 64;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 4096) {
        printf("hard fd limit too low: %lu\n", (unsigned long)rl.rlim_max);
        return 1;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int filler = 0;
    for (;;) {
        int f = open("/dev/null", O_RDONLY);
        if (f < 0)
            return 1;
        filler++;
        if (f >= 1100)
            break;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    printf("listener fd above 1024: %d\n", l > 1024);
    struct sockaddr_in la = sin4("127.0.0.1", 0);
    int rb = bind(l, SA(la), sizeof la);
    int rl2 = listen(l, n + 8);
    printf("bind: %d listen: %d\n", rb, rl2);
    struct sockaddr_in to = sin4("127.0.0.1", local_port(l));
    int ep = epoll_create1(0);
    int *cl = calloc(n, sizeof(int)), *ac = calloc(n, sizeof(int));
    int above = 0, ok_conn = 0;
    for (int i = 0; i < n; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(cl[i], SA(to), sizeof to) == 0)
            ok_conn++;
        ac[i] = accept(l, NULL, NULL);
        above += cl[i] > 1024 && ac[i] > 1024;
        fcntl(ac[i], F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, ac[i], &ev);
    }
    printf("connected: %d of %d, both ends above 1024: %d\n", ok_conn, n, above);
    for (int i = 0; i < n; i++) {
        char m[32];
        int ml = snprintf(m, sizeof m, "msg-%d", i);
        send(cl[i], m, ml, 0);
    }
    int echoed = 0, rounds = 0;
    while (echoed < n && rounds < 200) {
        struct epoll_event out[64];
        int k = epoll_wait(ep, out, 64, 100);
        rounds++;
        for (int j = 0; j < k; j++) {
            int i = out[j].data.u32;
            char b[64];
            ssize_t r = read(ac[i], b, sizeof b);
            if (r > 0) {
                char want[32];
                int wl = snprintf(want, sizeof want, "msg-%d", i);
                if (r == wl && !memcmp(b, want, wl))
                    echoed++;
                send(ac[i], b, r, 0);
            }
        }
    }
    printf("server received and echoed: %d of %d\n", echoed, n);
    int back = 0;
    for (int i = 0; i < n; i++) {
        char b[64], want[32];
        int wl = snprintf(want, sizeof want, "msg-%d", i);
        if (recv(cl[i], b, wl, MSG_WAITALL) == wl && !memcmp(b, want, wl))
            back++;
    }
    printf("clients got their echo: %d of %d\n", back, n);
    /* dup2 to a high number and use the duplicate */
    int hi = dup2(cl[0], 3000);
    printf("dup2 to 3000: %d\n", hi);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int r = getpeername(hi, SA(ss), &sl);
    printf("getpeername(3000): %d %s\n", r, fmt_addr(&ss, sl));
    close(cl[0]);
    printf("send via 3000: %zd\n", send(hi, "dup", 3, 0));
    char b[8] = {0};
    fcntl(ac[0], F_SETFL, 0); /* blocking again: the data is in flight */
    ssize_t rr = recv(ac[0], b, 3, MSG_WAITALL);
    printf("recv: %zd %s\n", rr, b);
    close(hi);
    struct epoll_event out[4];
    int k = 0;
    for (int t = 0; t < 50 && k == 0; t++)
        k = epoll_wait(ep, out, 4, 100);
    printf("eof event after closing the last reference: %d\n", k > 0);
    printf("read eof: %zd\n", read(ac[0], b, sizeof b));
    return 0;
}
