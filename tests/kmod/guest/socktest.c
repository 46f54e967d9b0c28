// SPDX-License-Identifier: GPL-2.0
/*
 * Guest test of the `ins` module's socket files (protvm-driver/kmod,
 * sockfile.rs): a pair from /dev/ins (INS_IOC_PAIR) must behave like a
 * connected stream socket pair for read/write/poll/epoll/dup/fork/
 * sendfile/splice, with
 * blocking, non-blocking, EOF, EPIPE and signals.
 *
 * Prints `KMODTEST PASS <name>` or `KMODTEST FAIL <name>: <why>` per test.
 * `socktest hold` opens a pair and sleeps (the module must refuse unload).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/wait.h>
#include <unistd.h>

struct ins_pair {
	uint32_t flags;
	int32_t fds[2];
};
#define INS_IOC_PAIR _IOWR('I', 1, struct ins_pair)
#define RING_CAPACITY (64 * 1024)

static int failures;

static void report(const char *name, int ok, const char *why)
{
	if (ok)
		printf("KMODTEST PASS socket-%s\n", name);
	else {
		printf("KMODTEST FAIL socket-%s: %s (errno %d %s)\n", name, why, errno, strerror(errno));
		failures++;
	}
	fflush(stdout);
}

#define CHECK(name, cond, why)                  \
	do {                                    \
		if (!(cond)) {                  \
			report(name, 0, why);   \
			return;                 \
		}                               \
	} while (0)

static int make_pair(int fds[2], uint32_t flags)
{
	int dev = open("/dev/ins", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	struct ins_pair p = { .flags = flags, .fds = { -1, -1 } };
	int r = ioctl(dev, INS_IOC_PAIR, &p);
	close(dev);
	if (r < 0)
		return -1;
	fds[0] = p.fds[0];
	fds[1] = p.fds[1];
	return 0;
}

static uint8_t pat(size_t i)
{
	return (uint8_t)(i * 7 + (i >> 9));
}

static void fill_pattern(uint8_t *b, size_t off, size_t n)
{
	for (size_t j = 0; j < n; j++)
		b[j] = pat(off + j);
}

/* Reads until EOF or `limit` bytes, checking the pattern; returns the
 * count, sets *bad on a wrong byte. */
static size_t read_pattern(int fd, size_t limit, int *bad)
{
	static uint8_t buf[50000];
	size_t got = 0;
	*bad = 0;
	while (got < limit) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t j = 0; j < n; j++)
			if (buf[j] != pat(got + (size_t)j))
				*bad = 1;
		got += (size_t)n;
	}
	return got;
}

static int write_all(int fd, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static void t_pair(void)
{
	int fds[2];
	CHECK("pair", make_pair(fds, 0) == 0, "INS_IOC_PAIR");
	CHECK("pair", fds[0] >= 0 && fds[1] >= 0 && fds[0] != fds[1], "fds");
	CHECK("pair", (fcntl(fds[0], F_GETFD) & FD_CLOEXEC) == 0, "cloexec without the flag");
	close(fds[0]);
	close(fds[1]);
	CHECK("pair", make_pair(fds, 1) == 0, "INS_IOC_PAIR cloexec");
	CHECK("pair", (fcntl(fds[1], F_GETFD) & FD_CLOEXEC) != 0, "no cloexec");
	close(fds[0]);
	close(fds[1]);
	struct ins_pair bad = { .flags = 2 };
	int dev = open("/dev/ins", O_RDWR);
	CHECK("pair", dev >= 0, "open /dev/ins");
	CHECK("pair", ioctl(dev, INS_IOC_PAIR, &bad) < 0 && errno == EINVAL, "unknown flag not EINVAL");
	CHECK("pair", ioctl(dev, 0x1234, 0) < 0 && errno == ENOTTY, "unknown ioctl not ENOTTY");
	CHECK("pair", ioctl(dev, INS_IOC_PAIR, (void *)8) < 0 && errno == EFAULT, "bad pointer not EFAULT");
	close(dev);
	report("pair", 1, "");
}

static void t_rw(void)
{
	int fds[2];
	char buf[64];
	CHECK("rw", make_pair(fds, 0) == 0, "pair");
	CHECK("rw", write(fds[0], "hello", 5) == 5, "write a");
	CHECK("rw", write(fds[0], " world", 6) == 6, "write a 2");
	/* A stream: both writes may come back in one read. */
	ssize_t n = read(fds[1], buf, sizeof buf);
	CHECK("rw", n > 0, "read b");
	if (n < 11) {
		ssize_t m = read(fds[1], buf + n, sizeof buf - (size_t)n);
		CHECK("rw", m > 0, "read b 2");
		n += m;
	}
	CHECK("rw", n == 11 && memcmp(buf, "hello world", 11) == 0, "content a->b");
	CHECK("rw", write(fds[1], "pong", 4) == 4, "write b");
	CHECK("rw", read(fds[0], buf, 2) == 2 && memcmp(buf, "po", 2) == 0, "short read keeps the rest");
	CHECK("rw", read(fds[0], buf, 10) == 2 && memcmp(buf, "ng", 2) == 0, "rest of frame");
	close(fds[0]);
	close(fds[1]);
	report("rw", 1, "");
}

/* 8 MiB through the 64 KiB ring: a forked child writes in odd-sized
 * chunks (blocking on a full ring), the parent reads and checks every byte. */
static void t_bulk_fork(void)
{
	const size_t total = 8u << 20;
	int fds[2];
	CHECK("bulk-fork", make_pair(fds, 0) == 0, "pair");
	pid_t pid = fork();
	CHECK("bulk-fork", pid >= 0, "fork");
	if (pid == 0) {
		close(fds[1]);
		static uint8_t chunk[70000];
		size_t off = 0, k = 0;
		while (off < total) {
			size_t n = 1 + (k++ * 7919) % sizeof chunk;
			if (n > total - off)
				n = total - off;
			fill_pattern(chunk, off, n);
			if (write_all(fds[0], chunk, n))
				_exit(1);
			off += n;
		}
		_exit(0);
	}
	close(fds[0]);
	int bad;
	/* Past `total`: the read must also see EOF when the writer exits. */
	size_t got = read_pattern(fds[1], total + 1, &bad);
	int st = 0;
	waitpid(pid, &st, 0);
	close(fds[1]);
	CHECK("bulk-fork", WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer failed");
	CHECK("bulk-fork", got == total, "byte count");
	CHECK("bulk-fork", !bad, "content differs");
	printf("KMOD: bulk-fork moved %zu bytes, byte-exact, EOF after the writer exited\n", got);
	report("bulk-fork", 1, "");
}

static void t_nonblock_poll(void)
{
	int fds[2];
	CHECK("nonblock-poll", make_pair(fds, 0) == 0, "pair");
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	char buf[4096];
	CHECK("nonblock-poll", read(fds[1], buf, sizeof buf) < 0 && errno == EAGAIN, "empty read not EAGAIN");
	struct pollfd p = { .fd = fds[1], .events = POLLIN };
	CHECK("nonblock-poll", poll(&p, 1, 0) == 0, "empty end readable");
	p = (struct pollfd){ .fd = fds[0], .events = POLLOUT };
	CHECK("nonblock-poll", poll(&p, 1, 0) == 1 && (p.revents & POLLOUT), "fresh end not writable");
	memset(buf, 'x', sizeof buf);
	size_t in = 0;
	for (;;) {
		ssize_t w = write(fds[0], buf, sizeof buf);
		if (w < 0) {
			CHECK("nonblock-poll", errno == EAGAIN, "full write not EAGAIN");
			break;
		}
		in += (size_t)w;
		CHECK("nonblock-poll", in <= RING_CAPACITY, "ring took more than its capacity");
	}
	CHECK("nonblock-poll", in > RING_CAPACITY / 2, "ring took too little");
	p = (struct pollfd){ .fd = fds[0], .events = POLLOUT };
	CHECK("nonblock-poll", poll(&p, 1, 0) == 0, "full end writable");
	p = (struct pollfd){ .fd = fds[1], .events = POLLIN };
	CHECK("nonblock-poll", poll(&p, 1, 0) == 1 && (p.revents & POLLIN), "full end not readable");
	size_t out = 0;
	for (;;) {
		ssize_t r = read(fds[1], buf, sizeof buf);
		if (r < 0) {
			CHECK("nonblock-poll", errno == EAGAIN, "drained read not EAGAIN");
			break;
		}
		out += (size_t)r;
	}
	CHECK("nonblock-poll", out == in, "bytes lost");
	p = (struct pollfd){ .fd = fds[0], .events = POLLOUT };
	CHECK("nonblock-poll", poll(&p, 1, 0) == 1, "drained ring not writable");
	printf("KMOD: nonblock: ring took %zu bytes before EAGAIN\n", in);
	close(fds[0]);
	close(fds[1]);
	report("nonblock-poll", 1, "");
}

/* epoll: a blocked epoll_wait is woken by a write from another process
 * (readiness pushed by the writer, not polled). */
static void t_epoll(void)
{
	int fds[2];
	CHECK("epoll", make_pair(fds, 0) == 0, "pair");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK("epoll", ep >= 0, "epoll_create1");
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = 42 };
	CHECK("epoll", epoll_ctl(ep, EPOLL_CTL_ADD, fds[1], &ev) == 0, "epoll_ctl");
	struct epoll_event out[4];
	CHECK("epoll", epoll_wait(ep, out, 4, 0) == 0, "ready while empty");
	pid_t pid = fork();
	CHECK("epoll", pid >= 0, "fork");
	if (pid == 0) {
		usleep(200000);
		_exit(write(fds[0], "ping", 4) == 4 ? 0 : 1);
	}
	int n = epoll_wait(ep, out, 4, 5000);
	CHECK("epoll", n == 1 && out[0].data.u32 == 42 && (out[0].events & EPOLLIN), "no EPOLLIN within 5 s");
	char buf[8];
	CHECK("epoll", read(fds[1], buf, sizeof buf) == 4, "read after wake");
	int st;
	waitpid(pid, &st, 0);
	/* Peer closes: EPOLLRDHUP/EPOLLHUP, read returns 0. */
	close(fds[0]);
	n = epoll_wait(ep, out, 4, 5000);
	CHECK("epoll", n == 1 && (out[0].events & (EPOLLRDHUP | EPOLLHUP)), "no hang-up event");
	CHECK("epoll", read(fds[1], buf, sizeof buf) == 0, "EOF");
	close(fds[1]);
	close(ep);
	report("epoll", 1, "");
}

/* dup and fork share the file: the end stays open until its last
 * reference is closed; then the peer sees EOF, and writes to it EPIPE. */
static void t_dup_close(void)
{
	int fds[2];
	char buf[16];
	CHECK("dup-close", make_pair(fds, 0) == 0, "pair");
	int d = dup(fds[0]);
	CHECK("dup-close", d >= 0, "dup");
	close(fds[0]);
	CHECK("dup-close", write(d, "via dup", 7) == 7, "write through dup");
	CHECK("dup-close", read(fds[1], buf, sizeof buf) == 7 && memcmp(buf, "via dup", 7) == 0, "read dup data");
	pid_t pid = fork();
	CHECK("dup-close", pid >= 0, "fork");
	if (pid == 0) {
		/* Child holds `d` a while after the parent closes it. */
		usleep(300000);
		ssize_t w = write(d, "child", 5);
		_exit(w == 5 ? 0 : 1);
	}
	close(d);
	ssize_t n = read(fds[1], buf, sizeof buf); /* blocks until the child writes */
	CHECK("dup-close", n == 5 && memcmp(buf, "child", 5) == 0, "child data after parent close");
	int st;
	waitpid(pid, &st, 0);
	CHECK("dup-close", WIFEXITED(st) && WEXITSTATUS(st) == 0, "child write");
	CHECK("dup-close", read(fds[1], buf, sizeof buf) == 0, "no EOF after last close");
	signal(SIGPIPE, SIG_IGN);
	CHECK("dup-close", write(fds[1], "x", 1) < 0 && errno == EPIPE, "write to closed peer not EPIPE");
	close(fds[1]);
	report("dup-close", 1, "");
}

/* sendfile() from a file into a socket file (splice_write) with a reader
 * on the other end, and splice() from a socket file into a pipe
 * (splice_read). */
static void t_sendfile_splice(void)
{
	const size_t total = 1u << 20;
	int fds[2];
	CHECK("sendfile-splice", make_pair(fds, 0) == 0, "pair");
	int f = open("/tmp/sendfile.src", O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK("sendfile-splice", f >= 0, "tmp file");
	static uint8_t buf[65536];
	for (size_t off = 0; off < total; off += sizeof buf) {
		fill_pattern(buf, off, sizeof buf);
		CHECK("sendfile-splice", write_all(f, buf, sizeof buf) == 0, "tmp write");
	}
	pid_t pid = fork();
	CHECK("sendfile-splice", pid >= 0, "fork");
	if (pid == 0) {
		off_t off = 0;
		size_t left = total;
		while (left) {
			ssize_t n = sendfile(fds[0], f, &off, left);
			if (n <= 0)
				_exit(1);
			left -= (size_t)n;
		}
		_exit(0);
	}
	int bad;
	size_t got = read_pattern(fds[1], total, &bad);
	int st;
	waitpid(pid, &st, 0);
	close(f);
	unlink("/tmp/sendfile.src");
	CHECK("sendfile-splice", WIFEXITED(st) && WEXITSTATUS(st) == 0, "sendfile failed");
	CHECK("sendfile-splice", got == total && !bad, "sendfile data differs");
	int p[2];
	CHECK("sendfile-splice", pipe(p) == 0, "pipe");
	CHECK("sendfile-splice", write(fds[0], "spliced!", 8) == 8, "write");
	ssize_t n = splice(fds[1], NULL, p[1], NULL, 64, 0);
	CHECK("sendfile-splice", n == 8, "splice to pipe");
	char out[16];
	CHECK("sendfile-splice", read(p[0], out, sizeof out) == 8 && memcmp(out, "spliced!", 8) == 0, "pipe content");
	close(p[0]);
	close(p[1]);
	close(fds[0]);
	close(fds[1]);
	report("sendfile-splice", 1, "");
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* A blocked read is interrupted by a signal without SA_RESTART (EINTR). */
static void t_signal(void)
{
	int fds[2];
	char buf[8];
	CHECK("signal", make_pair(fds, 0) == 0, "pair");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	alarm(1);
	ssize_t n = read(fds[1], buf, sizeof buf);
	int e = errno;
	alarm(0);
	errno = e;
	CHECK("signal", n < 0 && e == EINTR, "blocked read not EINTR");
	close(fds[0]);
	close(fds[1]);
	report("signal", 1, "");
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "hold") == 0) {
		int fds[2];
		if (make_pair(fds, 0))
			return 1;
		printf("KMOD: holding a pair\n");
		fflush(stdout);
		pause();
		return 0;
	}
	t_pair();
	t_rw();
	t_bulk_fork();
	t_nonblock_poll();
	t_epoll();
	t_dup_close();
	t_sendfile_splice();
	t_signal();
	return failures ? 1 : 0;
}
