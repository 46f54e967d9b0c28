/* Run under libshim.so with no driver: prints one line per step,
 * "<name> <return value> <errno>" (errno 0 when the call succeeded). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void show(const char *name, long rc) {
    printf("%s %ld %d\n", name, rc < 0 ? -1L : rc >= 0 ? 0L : rc, rc < 0 ? errno : 0);
    fflush(stdout);
}

int main(void) {
    int s4 = socket(AF_INET, SOCK_STREAM, 0);
    show("inet_stream", s4);
    show("inet6_dgram", socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    show("inet_raw", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    show("inet_ping", socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP));
    show("inet_badproto", socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));
    show("packet", socket(AF_PACKET, SOCK_RAW, 0));
    if (s4 >= 0) {
        /* Fail-open: the host stack really works. */
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        show("host_bind", bind(s4, (struct sockaddr *)&a, sizeof a));
        socklen_t l = sizeof a;
        int r = getsockname(s4, (struct sockaddr *)&a, &l);
        show("host_getsockname", r == 0 && a.sin_family == AF_INET && a.sin_port != 0 ? 0 : -1);
        show("host_listen", listen(s4, 4));
        close(s4);
    }

    /* Unix sockets and files go to libc. */
    int sv[2];
    show("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    show("unix_write", write(sv[0], "ping", 4) == 4 ? 0 : -1);
    char buf[16] = {0};
    show("unix_read", read(sv[1], buf, sizeof buf) == 4 && memcmp(buf, "ping", 4) == 0 ? 0 : -1);
    int d = dup(sv[1]);
    show("unix_dup", d);
    show("unix_close", close(d));
    close(sv[0]);
    show("unix_eof", read(sv[1], buf, sizeof buf));
    close(sv[1]);
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    show("unix_socket", u);
    close(u);

    char path[] = "/tmp/shim-nodriver-XXXXXX";
    int f = mkstemp(path);
    show("file_open", f);
    show("file_write", write(f, "hello", 5) == 5 ? 0 : -1);
    lseek(f, 0, SEEK_SET);
    show("file_read", read(f, buf, sizeof buf) == 5 ? 0 : -1);
    show("file_fcntl_dupfd", fcntl(f, F_DUPFD_CLOEXEC, 100) >= 100 ? 0 : -1);
    close(f);
    unlink(path);
    show("bad_fd_read", read(12345, buf, 1));
    return 0;
}
