/* Datagrams sent past the shim: a connected UDP socket written with raw
 * syscalls (as Debian's libuv sends with syscall(SYS_sendmmsg), which no
 * LD_PRELOAD hook sees), the replies read with the ordinary recv().
 *
 * usage: rawudp server PORT   (echo server: prints "server: ready")
 *        rawudp client PORT   (transcript of the sends and the replies)
 *        rawudp unconnected PORT (one raw sendto on an unconnected socket) */
#include "common.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/uio.h>

static int echo_server(int port)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        return 1;
    printf("server: ready\n");
    fflush(stdout);
    for (;;) {
        char b[2048];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return 1;
        char r[2100];
        int m = snprintf(r, sizeof r, "echo:%.*s", (int)n, b);
        sendto(s, r, m, 0, (struct sockaddr *)&from, fl);
    }
}

static void recv_replies(int c, int want)
{
    for (int i = 0; i < want; i++) {
        struct pollfd pf = {.fd = c, .events = POLLIN};
        if (poll(&pf, 1, 3000) != 1) {
            printf("reply %d: timeout\n", i);
            continue;
        }
        char b[2100];
        ssize_t n = recv(c, b, sizeof b, 0);
        if (n < 0)
            printf("reply %d: -1 %s\n", i, ename(errno));
        else
            printf("reply %d: %zd \"%.*s\"\n", i, n, (int)n, b);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int port = atoi(argv[2]);
    if (!strcmp(argv[1], "server"))
        return echo_server(port);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    if (!strcmp(argv[1], "unconnected")) {
        long r = syscall(SYS_sendto, c, "lost?", 5, 0, (struct sockaddr *)&to, sizeof to);
        step("raw sendto unconnected", r, errno);
        return 0;
    }
    step("connect", connect(c, (struct sockaddr *)&to, sizeof to), errno);
    /* Two datagrams in one raw sendmmsg, as libuv sends. */
    struct iovec v[2] = {{.iov_base = "mmsg-one", .iov_len = 8},
                         {.iov_base = "mmsg-two!", .iov_len = 9}};
    struct mmsghdr m[2] = {{.msg_hdr = {.msg_iov = &v[0], .msg_iovlen = 1}},
                           {.msg_hdr = {.msg_iov = &v[1], .msg_iovlen = 1}}};
    long r = syscall(SYS_sendmmsg, c, m, 2, 0);
    step("raw sendmmsg", r, errno);
    printf("raw sendmmsg lens: %u %u\n", m[0].msg_len, m[1].msg_len);
    recv_replies(c, 2);
    step("raw write", syscall(SYS_write, c, "raw-write", 9), errno);
    recv_replies(c, 1);
    struct msghdr h = {.msg_iov = &v[0], .msg_iovlen = 1};
    step("raw sendmsg", syscall(SYS_sendmsg, c, &h, 0), errno);
    recv_replies(c, 1);
    /* A datagram of 40 bytes, longer than the shim's header. */
    const char *big = "0123456789012345678901234567890123456789";
    step("raw sendto connected", syscall(SYS_sendto, c, big, 40, 0, NULL, 0), errno);
    recv_replies(c, 1);
    /* The hooked path still works after. */
    step("send", send(c, "hooked", 6, 0), errno);
    recv_replies(c, 1);
    return 0;
}
