// SPDX-License-Identifier: GPL-2.0
/*
 * `peek PORT`, run under the shim in the kmod guest
 * (LD_PRELOAD=libshim.so): the socket API itself on a socket file of the
 * module. Built on the host, dynamically (tests/kmod/04-initramfs.sh), so
 * that LD_PRELOAD applies; it checks that its socket is a socket file.
 *
 * An HTTP/1.0 request to nginx (under the shim too) on PORT;
 * recv(MSG_PEEK) sees the status line's first bytes and leaves them,
 * recv(MSG_WAITALL) then reads exactly those bytes, recvmsg(MSG_PEEK) over
 * two iovecs sees what follows, and the response read to its end holds
 * the page.
 *
 * Prints `KMODTEST PASS <name>` or `KMODTEST FAIL <name>: <why>`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int failures;

static void report(const char *name, int ok, const char *why)
{
	if (ok) {
		printf("KMODTEST PASS peek-%s\n", name);
	} else {
		printf("KMODTEST FAIL peek-%s: %s (errno %d %s)\n", name, why, errno,
		       strerror(errno));
		failures++;
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: peek PORT\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char link[64] = "", path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	ssize_t ln = readlink(path, link, sizeof link - 1);
	if (ln > 0)
		link[ln] = 0;
	report("socket-file", strcmp(link, "anon_inode:[ins-socket]") == 0, link);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int c = fd >= 0 ? connect(fd, (struct sockaddr *)&a, sizeof a) : -1;
	report("connect", c == 0, "connect under the shim");
	if (c != 0)
		return 1;
	const char req[] = "GET /index.html HTTP/1.0\r\n\r\n";
	report("send", send(fd, req, sizeof req - 1, 0) == (ssize_t)(sizeof req - 1), "send");
	alarm(30);
	char p1[16] = "", p2[16] = "", w[16] = "", a1[8] = "", a2[8] = "";
	/* Peek until the first 12 bytes are there ("HTTP/1.1 200"). */
	ssize_t n1 = -1;
	for (int i = 0; i < 200; i++) {
		n1 = recv(fd, p1, 12, MSG_PEEK);
		if (n1 == 12 || n1 <= 0)
			break;
		usleep(10000);
	}
	ssize_t n2 = recv(fd, p2, 12, MSG_PEEK);
	report("recv", n1 == 12 && n2 == 12 && memcmp(p1, "HTTP/1.1 200", 12) == 0 &&
			       memcmp(p1, p2, 12) == 0,
	       "recv(MSG_PEEK) twice did not see the status line");
	ssize_t nw = recv(fd, w, 12, MSG_WAITALL);
	report("then-waitall", nw == 12 && memcmp(w, p1, 12) == 0,
	       "recv(MSG_WAITALL) after the peeks did not read the same 12 bytes");
	struct iovec v[2] = { { a1, 3 }, { a2, 4 } };
	struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
	ssize_t nm = recvmsg(fd, &m, MSG_PEEK);
	char rest[4096];
	size_t have = 0;
	for (;;) {
		ssize_t k = recv(fd, rest + have, sizeof rest - have, 0);
		if (k <= 0)
			break;
		have += (size_t)k;
	}
	alarm(0);
	report("recvmsg-iovecs",
	       nm > 0 && have >= (size_t)nm && memcmp(a1, rest, nm < 3 ? (size_t)nm : 3) == 0 &&
		       (nm <= 3 || memcmp(a2, rest + 3, (size_t)nm - 3) == 0),
	       "recvmsg(MSG_PEEK) over two iovecs did not see the next bytes");
	report("body", have > 0 && memmem(rest, have, "hello from nginx", 16) != NULL,
	       "the response did not hold the page");
	close(fd);
	return failures ? 1 : 0;
}
