// SPDX-License-Identifier: GPL-2.0
/*
 * `peek PORT PATH FILE`, run under the shim in the kmod guest
 * (LD_PRELOAD=libshim.so): the socket API itself on a socket file of the
 * module. Built on the host, dynamically (tests/kmod/04-initramfs.sh), so
 * that LD_PRELOAD applies; it checks that its socket is a socket file.
 *
 * An HTTP/1.0 request for PATH to nginx (under the shim too) on PORT;
 * recv(MSG_PEEK) sees the status line's first bytes and leaves them,
 * recv(MSG_WAITALL) then reads exactly those bytes, recvmsg(MSG_PEEK) over
 * two iovecs fills both (3 + 4 bytes) with what follows, recv(MSG_WAITALL)
 * of 300,000 bytes (more than one read of the module gives, and more than
 * the instance's window) returns all of them, and the whole response's
 * body equals FILE byte for byte.
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
	if (argc < 4) {
		fprintf(stderr, "usage: peek PORT PATH FILE\n");
		return 2;
	}
	/* The file nginx serves, to compare the body with. */
	FILE *f = fopen(argv[3], "rb");
	static char want[4 << 20];
	size_t want_len = f ? fread(want, 1, sizeof want, f) : 0;
	if (f)
		fclose(f);
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
	char req[256];
	int rl = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", argv[2]);
	report("send", send(fd, req, rl, 0) == rl, "send");
	alarm(60);
	static char resp[5 << 20];
	size_t have = 0;
	char p1[16] = "", p2[16] = "";
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
	ssize_t nw = recv(fd, resp, 12, MSG_WAITALL);
	report("then-waitall", nw == 12 && memcmp(resp, p1, 12) == 0,
	       "recv(MSG_WAITALL) after the peeks did not read the same 12 bytes");
	have = nw > 0 ? (size_t)nw : 0;
	char a1[3], a2[4];
	struct iovec v[2] = { { a1, sizeof a1 }, { a2, sizeof a2 } };
	struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
	ssize_t nm = -1;
	for (int i = 0; i < 200; i++) {
		nm = recvmsg(fd, &m, MSG_PEEK);
		if (nm == 7 || nm <= 0)
			break;
		usleep(10000);
	}
	ssize_t nb = recv(fd, resp + have, 7, MSG_WAITALL);
	report("recvmsg-iovecs",
	       nm == 7 && nb == 7 && memcmp(a1, resp + have, 3) == 0 &&
		       memcmp(a2, resp + have + 3, 4) == 0,
	       "recvmsg(MSG_PEEK) over two iovecs did not fill both with the next bytes");
	have += nb > 0 ? (size_t)nb : 0;
	const size_t big = 300000;
	ssize_t nbig = recv(fd, resp + have, big, MSG_WAITALL);
	report("waitall-300000", nbig == (ssize_t)big,
	       "recv(MSG_WAITALL) of 300,000 bytes did not return them all");
	have += nbig > 0 ? (size_t)nbig : 0;
	for (;;) {
		ssize_t k = recv(fd, resp + have, sizeof resp - have, 0);
		if (k <= 0)
			break;
		have += (size_t)k;
	}
	alarm(0);
	char *body = memmem(resp, have, "\r\n\r\n", 4);
	size_t blen = body ? have - (size_t)(body + 4 - resp) : 0;
	report("body", want_len > 0 && body && blen == want_len && memcmp(body + 4, want, want_len) == 0,
	       "the response's body is not the file");
	close(fd);
	return failures ? 1 : 0;
}
