/* gethostbyname, gethostbyname2 and gethostbyname_r (with a buffer too
 * small, then a big one) for each name on the command line, and
 * gethostbyaddr and gethostbyaddr_r for each that is an IPv4 address; prints the
 * results (or h_errno / the return value) one line per call, so a run
 * natively and one under INS can be compared line by line. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

static void show(const char *what, const char *name, struct hostent *h) {
    char a[INET6_ADDRSTRLEN];
    if (!h) {
        printf("%s %s: h_errno=%d\n", what, name, h_errno);
        return;
    }
    printf("%s %s: name=%s type=%d len=%d", what, name, h->h_name, h->h_addrtype, h->h_length);
    for (char **p = h->h_addr_list; *p; p++)
        printf(" %s", inet_ntop(h->h_addrtype, *p, a, sizeof a));
    printf("\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *n = argv[i];
        show("gethostbyname", n, gethostbyname(n));
        show("gethostbyname2(AF_INET)", n, gethostbyname2(n, AF_INET));
        show("gethostbyname2(AF_INET6)", n, gethostbyname2(n, AF_INET6));
        struct hostent he, *res = NULL;
        char small[8], big[4096];
        int herr = 0;
        int rv = gethostbyname_r(n, &he, small, sizeof small, &res, &herr);
        printf("gethostbyname_r(8 bytes) %s: rv=%d found=%d h_errno=%d\n", n, rv, res != NULL, herr);
        rv = gethostbyname_r(n, &he, big, sizeof big, &res, &herr);
        printf("gethostbyname_r %s: rv=%d h_errno=%d\n", n, rv, res ? 0 : herr);
        if (res)
            show("gethostbyname_r", n, res);
        struct in_addr a4;
        if (inet_pton(AF_INET, n, &a4) == 1) {
            show("gethostbyaddr", n, gethostbyaddr(&a4, sizeof a4, AF_INET));
            res = NULL;
            rv = gethostbyaddr_r(&a4, sizeof a4, AF_INET, &he, big, sizeof big, &res, &herr);
            printf("gethostbyaddr_r %s: rv=%d h_errno=%d\n", n, rv, res ? 0 : herr);
            if (res)
                show("gethostbyaddr_r", n, res);
        }
    }
    return 0;
}
