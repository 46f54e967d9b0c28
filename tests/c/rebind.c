/* A listener's port is free again right after close(), as iperf3 -s
 * relies on between tests: ROUNDS times, a SO_REUSEADDR listener is bound
 * to the same port, takes one connection (client and accepted socket
 * exchange a byte), and everything is closed; the next round binds again
 * at once. Also the dual-stack pair of a port: 0.0.0.0:P, then [::]:P
 * with IPV6_V6ONLY, and the reverse order. Prints the failures by call
 * and errno; natively all counts are 0.
 *
 * usage: rebind PORT [ROUNDS] */
#include "common.h"

#include <netinet/tcp.h>

static int failures;

static void fail(const char *what, int round, int err)
{
    if (failures < 10)
        printf("round %d: %s: %s\n", round, what, ename(err));
    failures++;
}

static int listener(int family, int port, int v6only)
{
    int s = socket(family, SOCK_STREAM, 0), one = 1;
    if (s < 0)
        return -1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int r;
    if (family == AF_INET6) {
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                                 .sin6_addr = in6addr_any};
        r = bind(s, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_ANY)};
        r = bind(s, (struct sockaddr *)&a, sizeof a);
    }
    if (r < 0 || listen(s, 16) < 0) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int port = atoi(argv[1]);
    int rounds = argc > 2 ? atoi(argv[2]) : 200;
    for (int i = 0; i < rounds; i++) {
        int l = listener(AF_INET, port, 0);
        if (l < 0) {
            fail("bind/listen", i, errno);
            continue;
        }
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
            fail("connect", i, errno);
        } else {
            int x = accept(l, NULL, NULL);
            char b = 'x';
            if (x < 0)
                fail("accept", i, errno);
            else if (write(c, &b, 1) != 1 || read(x, &b, 1) != 1)
                fail("exchange", i, errno);
            if (x >= 0)
                close(x);
        }
        close(c);
        close(l);
    }
    printf("rebind rounds: %d, failures: %d\n", rounds, failures);
    /* Dual-stack pairs, both orders, each several times. */
    int dual = 0;
    for (int i = 0; i < 20; i++) {
        int first = i % 2 ? AF_INET6 : AF_INET;
        int a4 = listener(first, port, 1);
        int b6 = listener(first == AF_INET ? AF_INET6 : AF_INET, port, 1);
        if (a4 < 0 || b6 < 0) {
            printf("dual %d (%s first): %s\n", i, first == AF_INET ? "v4" : "v6", ename(errno));
            dual++;
        }
        if (a4 >= 0)
            close(a4);
        if (b6 >= 0)
            close(b6);
    }
    printf("dual-stack pairs: 20, failures: %d\n", dual);
    /* Without V6ONLY, [::]:P covers 0.0.0.0:P: Linux refuses the pair. */
    int a = listener(AF_INET, port, 0);
    int b = listener(AF_INET6, port, 0);
    step("bind [::] without V6ONLY after 0.0.0.0", b, errno);
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    return 0;
}
