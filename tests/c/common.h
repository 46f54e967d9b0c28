/* Shared helpers of the INS end-to-end C programs: transcript printing
 * with errno names, address formatting without port numbers (ports differ
 * between runs), and a per-step alarm so that a call that would block
 * forever shows up as EINTR in the transcript instead of hanging the test. */
#ifndef INS_E2E_COMMON_H
#define INS_E2E_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static __attribute__((unused)) const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    static char buf[32];
    if (n)
        return n;
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
}

/* "name: ret errno" — errno printed only when ret == -1. */
static __attribute__((unused)) void step(const char *name, long ret, int err)
{
    if (ret == -1)
        printf("%s: -1 %s\n", name, ename(err));
    else
        printf("%s: %ld -\n", name, ret);
    fflush(stdout);
}

/* Same, for calls returning a new fd: any fd >= 0 prints as "fd". */
static __attribute__((unused)) void step_fd(const char *name, int ret, int err)
{
    if (ret >= 0)
        printf("%s: fd -\n", name);
    else
        step(name, ret, err);
    fflush(stdout);
}

static __attribute__((unused)) void on_alarm(int sig) { (void)sig; }

/* Every blocking call is bounded: SIGALRM without SA_RESTART makes it
 * return EINTR after `secs`. */
static __attribute__((unused)) void guard_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static __attribute__((unused)) const char *fam(int f)
{
    switch (f) {
    case AF_INET: return "AF_INET";
    case AF_INET6: return "AF_INET6";
    case AF_UNIX: return "AF_UNIX";
    case AF_UNSPEC: return "AF_UNSPEC";
    default: return "AF_?";
    }
}

/* "AF_INET 127.0.0.1 port>0" */
static __attribute__((unused)) const char *fmt_addr(const struct sockaddr_storage *ss, socklen_t len)
{
    static char out[128];
    char a[INET6_ADDRSTRLEN] = "?";
    int port = -1;
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s = (const void *)ss;
        inet_ntop(AF_INET, &s->sin_addr, a, sizeof a);
        port = ntohs(s->sin_port);
    } else if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s = (const void *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof a);
        port = ntohs(s->sin6_port);
    }
    snprintf(out, sizeof out, "%s %s %s len=%u", fam(ss->ss_family), a,
             port < 0 ? "port?" : port == 0 ? "port=0" : "port>0", (unsigned)len);
    return out;
}

static __attribute__((unused)) int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return -1;
}

static __attribute__((unused)) struct sockaddr_in sin4(const char *ip, int port)
{
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons(port);
    inet_pton(AF_INET, ip, &s.sin_addr);
    return s;
}

static __attribute__((unused)) struct sockaddr_in6 sin6(const char *ip, int port)
{
    struct sockaddr_in6 s;
    memset(&s, 0, sizeof s);
    s.sin6_family = AF_INET6;
    s.sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &s.sin6_addr);
    return s;
}

/* The bound port of fd (or -1). */
static __attribute__((unused)) int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &l) != 0)
        return -1;
    return port_of(&ss);
}

#define SA(x) ((struct sockaddr *)&(x))

#endif
