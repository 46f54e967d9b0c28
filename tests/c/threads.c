/* Many threads using INS sockets at once (concurrent socket(), connect(),
 * accept(), blocking reads): T threads each run R connect/accept/echo
 * rounds against one shared listener served by an accept thread.
 * Usage: threads T R */
#include "common.h"
#include <pthread.h>

static struct sockaddr_in to;
static int lst;
static int rounds;

static void *server(void *arg)
{
    long total = (long)arg;
    for (long i = 0; i < total; i++) {
        int a = accept(lst, NULL, NULL);
        if (a < 0)
            return (void *)1;
        char b[32];
        ssize_t n = recv(a, b, sizeof b, 0);
        if (n > 0)
            send(a, b, n, 0);
        close(a);
    }
    return NULL;
}

static void *client(void *arg)
{
    long ok = 0;
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0)
            continue;
        if (connect(c, SA(to), sizeof to) == 0) {
            char m[32], b[32];
            int ml = snprintf(m, sizeof m, "t%lx-%d", (unsigned long)pthread_self(), i);
            send(c, m, ml, 0);
            ssize_t n = recv(c, b, sizeof b, MSG_WAITALL);
            if (n == ml && !memcmp(m, b, ml))
                ok++;
        }
        close(c);
    }
    return (void *)ok;
}

int main(int argc, char **argv)
{
    guard_init();
    alarm(60);
    int t = argc > 1 ? atoi(argv[1]) : 8;
    rounds = argc > 2 ? atoi(argv[2]) : 50;
    lst = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin4("127.0.0.1", 0);
    bind(lst, SA(la), sizeof la);
    listen(lst, 128);
    to = sin4("127.0.0.1", local_port(lst));
    pthread_t srv, cl[64];
    pthread_create(&srv, NULL, server, (void *)(long)(t * rounds));
    for (int i = 0; i < t && i < 64; i++)
        pthread_create(&cl[i], NULL, client, NULL);
    long ok = 0;
    for (int i = 0; i < t && i < 64; i++) {
        void *r;
        pthread_join(cl[i], &r);
        ok += (long)r;
    }
    void *sr;
    pthread_join(srv, &sr);
    printf("echo rounds ok: %ld of %d\n", ok, t * rounds);
    printf("server thread: %s\n", sr ? "accept failed" : "ok");
    return 0;
}
