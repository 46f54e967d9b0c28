/* fork and exec with INS sockets:
 *  - a listener inherited across fork: the child accepts, the parent
 *    connects (a fresh control connection in the child);
 *  - a connected socket inherited across exec (the shim's table is gone
 *    after exec and must learn the fd again): the exec'd program calls
 *    getsockname/getpeername/getsockopt on it and talks through it.
 * Usage: forkexec | forkexec exec-child FD */
#include "common.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
    guard_init();
    alarm(30);
    if (argc >= 3 && !strcmp(argv[1], "exec-child")) {
        int fd = atoi(argv[2]);
        struct sockaddr_storage ss;
        socklen_t l = sizeof ss;
        int r = getsockname(fd, SA(ss), &l);
        printf("exec-child getsockname: %d %s\n", r, fmt_addr(&ss, l));
        l = sizeof ss;
        r = getpeername(fd, SA(ss), &l);
        printf("exec-child getpeername: %d %s\n", r, fmt_addr(&ss, l));
        int v = -1;
        socklen_t vl = sizeof v;
        r = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vl);
        printf("exec-child SO_DOMAIN: %d %s\n", r, fam(v));
        char buf[16] = {0};
        ssize_t n = recv(fd, buf, 5, MSG_WAITALL);
        printf("exec-child recv: %zd %s\n", n, buf);
        printf("exec-child send: %zd\n", send(fd, "child", 5, 0));
        fflush(stdout);
        return 0;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin4("127.0.0.1", 0);
    bind(l, SA(la), sizeof la);
    listen(l, 8);
    struct sockaddr_in to = sin4("127.0.0.1", local_port(l));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* child: accept on the inherited listener and answer */
        int a = accept(l, NULL, NULL);
        char buf[8] = {0};
        ssize_t n = recv(a, buf, 4, MSG_WAITALL);
        printf("fork-child accept: %s recv %zd %s\n", a >= 0 ? "fd" : ename(errno), n, buf);
        int c2 = socket(AF_INET, SOCK_STREAM, 0); /* a new socket in the child */
        int r = connect(c2, SA(to), sizeof to);
        printf("fork-child new socket connect: %d\n", r);
        send(a, "pong", 4, 0);
        fflush(stdout);
        close(c2);
        _exit(0);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    printf("parent connect: %d\n", connect(c, SA(to), sizeof to));
    send(c, "ping", 4, 0);
    char buf[8] = {0};
    ssize_t n = recv(c, buf, 4, MSG_WAITALL);
    int st;
    waitpid(pid, &st, 0);
    printf("parent recv: %zd %s child exit %d\n", n, buf, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    int a2 = accept(l, NULL, NULL); /* the child's second connection */
    printf("parent accepts the child's connection: %s\n", a2 >= 0 ? "fd" : ename(errno));
    close(a2);
    close(c);
    fflush(stdout);

    /* exec with an inherited connected socket */
    int c3 = socket(AF_INET, SOCK_STREAM, 0);
    connect(c3, SA(to), sizeof to);
    int a3 = accept(l, NULL, NULL);
    pid = fork();
    if (pid == 0) {
        char fdarg[16];
        snprintf(fdarg, sizeof fdarg, "%d", c3);
        execl("/proc/self/exe", argv[0], "exec-child", fdarg, (char *)NULL);
        _exit(127);
    }
    close(c3);
    send(a3, "hello", 5, 0);
    memset(buf, 0, sizeof buf);
    n = recv(a3, buf, 5, MSG_WAITALL);
    waitpid(pid, &st, 0);
    printf("parent got from exec-child: %zd %s exit %d\n", n, buf, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    n = recv(a3, buf, sizeof buf, 0);
    printf("parent eof after exec-child exit: %zd\n", n);
    return 0;
}
