// SPDX-License-Identifier: GPL-2.0
/*
 * The shim's control messages on /dev/ins (protvm-driver/kmod,
 * control.rs), sent by hand: not the shim, a test client that encodes the
 * same ins-protocol control packets (protocol/src/control.rs: a 112-byte
 * little-endian header) and sends them with INS_IOC_CONTROL. Needs a live
 * instance (guest/init starts `ins --kmod`): socket(), bind() and listen()
 * go through driver-core in the module to that instance, whose real
 * listening socket must then appear in /proc/net/tcp, and go away when the
 * socket file is closed. `shimctl hold` makes such a listener and keeps it
 * until killed.
 *
 * Prints `KMODTEST PASS <name>` or `KMODTEST FAIL <name>: <why>`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PACKET (112 + 256)
struct ins_control {
	int32_t fd;
	uint32_t len;
	uint8_t packet[MAX_PACKET];
};
#define INS_IOC_CONTROL _IOWR('I', 3, struct ins_control)
/* recv(MSG_PEEK) on a socket file (control.rs, sock_ioctl). */
struct ins_peek {
	uint64_t buf;
	uint64_t len;
	uint32_t flags;
	uint32_t pad;
};
#define INS_IOC_PEEK _IOW('I', 5, struct ins_peek)
#define PEEK_DONTWAIT 1
/* An instance domain's channel (ins_main.rs): Xen only. */
struct ins_xen_offer {
	uint32_t flags, domid, ring_capacity, max_frame, max_refs;
	int32_t fd;
	uint64_t refs;
	uint32_t pages, port, live_port, to_driver_offset, region_len, reserved;
};
#define INS_IOC_XEN_OFFER _IOWR('I', 6, struct ins_xen_offer)
enum {
	OP_SOCKET = 1,
	OP_BIND = 2,
	OP_LISTEN = 3,
	OP_CONNECT = 4,
	OP_ACCEPT = 5,
	OP_SETOPT = 8,
	OP_GETSOCKNAME = 9,
	OP_TAKE_ERROR = 12,
};
static void data_path(int dev);
static void accept_path(int dev, int l);
static void nonblocking_connect(int dev, int l);
#define PORT 8097

static int failures;
static uint32_t next_seq = 1;

static void report(const char *name, int ok, const char *why)
{
	if (ok) {
		printf("KMODTEST PASS shimctl-%s\n", name);
	} else {
		printf("KMODTEST FAIL shimctl-%s: %s (errno %d %s)\n", name, why, errno,
		       strerror(errno));
		failures++;
	}
	fflush(stdout);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

struct reply {
	int status; /* the reply's errno, or -1 if the ioctl failed */
	int fd;
	int a0; /* the reply's args[0] (TakeError: the pending error) */
	uint16_t family, port;
};

/* Sends request `c` (op and seq already in its header, `len` set) and
 * reads the reply's fields. */
static struct reply exchange(int dev, struct ins_control *c)
{
	struct reply r = { .status = -1, .fd = -1 };
	uint8_t *h = c->packet;
	uint32_t op = get32(h) & 0xffff, seq = get32(h + 4);
	if (ioctl(dev, INS_IOC_CONTROL, c) < 0)
		return r;
	if (c->len < 112 || get32(h + 4) != seq || (get32(h) & 0xffff) != op) {
		errno = EPROTO;
		return r;
	}
	r.status = (int)get32(h + 8);
	r.fd = c->fd;
	r.a0 = (int)get32(h + 16);
	r.family = (uint16_t)get32(h + 32);
	r.port = (uint16_t)(get32(h + 32) >> 16);
	return r;
}

/* A request's header: op, a new seq, two args; the socket fd it is about;
 * 112 bytes long (no value). */
static void request(struct ins_control *c, uint16_t op, int fd, int32_t a0, int32_t a1)
{
	memset(c, 0, sizeof *c);
	put16(c->packet + 0, op);
	put32(c->packet + 4, next_seq++);
	put32(c->packet + 16, (uint32_t)a0);
	put32(c->packet + 20, (uint32_t)a1);
	c->fd = fd;
	c->len = 112;
}

/* One request: op, the socket fd it is about, two args, an IPv4 address
 * and port (none if the port is 0). */
static struct reply control_at(int dev, uint16_t op, int fd, int32_t a0, int32_t a1,
			       const uint8_t ip[4], uint16_t port)
{
	struct ins_control c;
	request(&c, op, fd, a0, a1);
	if (port) {
		put16(c.packet + 32, 2); /* AF_INET */
		put16(c.packet + 34, port);
		memcpy(c.packet + 40, ip, 4);
	}
	return exchange(dev, &c);
}

/* SetOpt(level, name) with an int value on socket file `fd`. */
static struct reply setopt(int dev, int fd, int level, int name, int32_t v)
{
	struct ins_control c;
	request(&c, OP_SETOPT, fd, level, name);
	put32(c.packet + 96, 4); /* value_len */
	put32(c.packet + 112, (uint32_t)v);
	c.len = 116;
	return exchange(dev, &c);
}

static const uint8_t ANY[4] = { 0, 0, 0, 0 };
static const uint8_t LOOPBACK[4] = { 127, 0, 0, 1 };

static struct reply control(int dev, uint16_t op, int fd, int32_t a0, int32_t a1, uint16_t port)
{
	return control_at(dev, op, fd, a0, a1, ANY, port);
}

/* Whether /proc/net/tcp lists a socket in LISTEN (0A) on PORT. */
static int listening(void)
{
	char line[512], want[16];
	FILE *f = fopen("/proc/net/tcp", "r");
	if (!f)
		return 0;
	snprintf(want, sizeof want, ":%04X", PORT);
	int found = 0;
	while (fgets(line, sizeof line, f)) {
		/* "  sl  local_address rem_address   st ..." */
		char local[64], remote[64], st[8];
		if (sscanf(line, "%*s %63s %63s %7s", local, remote, st) != 3)
			continue;
		size_t l = strlen(local);
		if (l >= 5 && strcmp(local + l - 5, want) == 0 && strcmp(st, "0A") == 0)
			found = 1;
	}
	fclose(f);
	return found;
}

static int listening_within(int want, int tenths)
{
	for (int i = 0; i < tenths; i++) {
		if (listening() == want)
			return 1;
		usleep(100000);
	}
	return listening() == want;
}

/* An echo server on the guest's own stack at 127.0.0.1:ECHO_PORT: one
 * connection, everything read is written back, exits 0 at EOF. Returns
 * its pid once it listens. */
#define ECHO_PORT 9000
static pid_t echo_server(void)
{
	int ready[2];
	if (pipe(ready) < 0)
		return -1;
	pid_t pid = fork();
	if (pid != 0) {
		char c;
		close(ready[1]);
		if (read(ready[0], &c, 1) != 1)
			pid = -1;
		close(ready[0]);
		return pid;
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(ECHO_PORT) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0)
		_exit(2);
	if (write(ready[1], "r", 1) != 1)
		_exit(2);
	int c = accept(l, NULL, NULL);
	if (c < 0)
		_exit(3);
	static char buf[65536];
	for (;;) {
		ssize_t n = read(c, buf, sizeof buf);
		if (n == 0)
			_exit(0);
		if (n < 0)
			_exit(4);
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(c, buf + off, (size_t)(n - off));
			if (w <= 0)
				_exit(5);
			off += w;
		}
	}
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + i / 251);
}

/* connect() through the instance to the echo server, then bytes both ways
 * through the socket file: a line, then 1 MiB written by a child while
 * this process reads it back (driver-core's credit windows at work). */
static void data_path(int dev)
{
	pid_t srv = echo_server();
	report("echo-server", srv > 0, "the echo server did not start");
	if (srv <= 0)
		return;
	struct reply s = control(dev, OP_SOCKET, -1, 2, 1, 0);
	/* A stream socket never connected polls as Linux's (TCP_CLOSE):
	 * writable and hung up, not readable. */
	struct pollfd f = { .fd = s.fd, .events = POLLIN | POLLOUT | POLLRDHUP };
	int pf = poll(&f, 1, 0);
	report("fresh-polls-out-hup", pf == 1 && f.revents == (POLLOUT | POLLHUP),
	       "a new socket file did not poll POLLOUT|POLLHUP");
	struct reply r = control_at(dev, OP_CONNECT, s.fd, 0, 0, LOOPBACK, ECHO_PORT);
	report("connect", s.status == 0 && r.status == 0, "Connect(127.0.0.1:9000) through the instance");
	if (r.status != 0)
		return;
	const char line[] = "hello through ins.ko\n";
	ssize_t w = write(s.fd, line, sizeof line - 1);
	char got[64] = "";
	size_t have = 0;
	while (have < sizeof line - 1) {
		ssize_t n = read(s.fd, got + have, sizeof got - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	report("echo-line", w == (ssize_t)(sizeof line - 1) && have == sizeof line - 1 &&
				    memcmp(got, line, have) == 0,
	       "the line did not come back");
	/* TCP_CORK on, a line, off (nginx's tcp_nopush, per response): the
	 * module answers both at once (the option frames follow the bytes in
	 * order on the ring), and the line comes back. */
	struct reply k1 = setopt(dev, s.fd, IPPROTO_TCP, 3 /* TCP_CORK */, 1);
	ssize_t w2 = write(s.fd, line, sizeof line - 1);
	struct reply k0 = setopt(dev, s.fd, IPPROTO_TCP, 3 /* TCP_CORK */, 0);
	alarm(20);
	memset(got, 0, sizeof got);
	have = 0;
	while (have < sizeof line - 1) {
		ssize_t n = read(s.fd, got + have, sizeof got - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	alarm(0);
	report("cork-in-order", k1.status == 0 && k0.status == 0 && w2 == (ssize_t)(sizeof line - 1) &&
					have == sizeof line - 1 && memcmp(got, line, have) == 0,
	       "TCP_CORK on/off around a line: not answered 0, or the line did not come back");
	/* The in-band ints: in range answered 0 in order; out of range the
	 * synchronous path gives the instance's EINVAL, as Linux. */
	struct reply ki = setopt(dev, s.fd, IPPROTO_TCP, 4 /* TCP_KEEPIDLE */, 45);
	struct reply ku = setopt(dev, s.fd, IPPROTO_TCP, 18 /* TCP_USER_TIMEOUT */, 30000);
	struct reply kb = setopt(dev, s.fd, IPPROTO_TCP, 6 /* TCP_KEEPCNT */, 128);
	report("int-options-in-order", ki.status == 0 && ku.status == 0 && kb.status == EINVAL,
	       "TCP_KEEPIDLE 45, TCP_USER_TIMEOUT 30000: not 0, or TCP_KEEPCNT 128 not EINVAL");
	const size_t total = 1 << 20;
	/* Bounded: a stall fails the test (the status says where). */
	alarm(60);
	pid_t writer = fork();
	if (writer == 0) {
		static uint8_t out[4096];
		for (size_t off = 0; off < total;) {
			size_t n = total - off < sizeof out ? total - off : sizeof out;
			for (size_t i = 0; i < n; i++)
				out[i] = pattern(off + i);
			ssize_t k = write(s.fd, out, n);
			if (k <= 0)
				_exit(1);
			off += (size_t)k;
		}
		_exit(0);
	}
	static uint8_t in[8192];
	size_t got_total = 0;
	int same = 1;
	while (got_total < total) {
		struct pollfd p = { .fd = s.fd, .events = POLLIN };
		if (poll(&p, 1, 20000) != 1) {
			printf("KMOD: echo stalled after %zu bytes; /dev/ins:\n", got_total);
			fflush(stdout);
			if (system("cat /dev/ins") < 0)
				break;
			kill(writer, SIGKILL);
			break;
		}
		ssize_t n = read(s.fd, in, sizeof in);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			same &= in[i] == pattern(got_total + (size_t)i);
		got_total += (size_t)n;
	}
	int wst = -1;
	waitpid(writer, &wst, 0);
	printf("KMOD: echoed %zu of %zu bytes through the module, %s\n", got_total, total,
	       same ? "byte-exact" : "CORRUPT");
	alarm(0);
	report("echo-bulk", got_total == total && same && WIFEXITED(wst) && WEXITSTATUS(wst) == 0,
	       "1 MiB did not come back byte-exact");
	/* The app lets go: the instance closes the connection, the server
	 * reads end of file. */
	close(s.fd);
	int sst = -1;
	alarm(20);
	waitpid(srv, &sst, 0);
	alarm(0);
	report("close-reaches-server", WIFEXITED(sst) && WEXITSTATUS(sst) == 0,
	       "the echo server did not see end of file");
}

/* `shimctl hold`: a listener on PORT through whatever instance is live,
 * held until the process is killed. */
static int hold(int dev)
{
	struct reply s = control(dev, OP_SOCKET, -1, 2, 1, 0);
	struct reply b = control(dev, OP_BIND, s.fd, 0, 0, PORT);
	struct reply l = control(dev, OP_LISTEN, s.fd, 16, 0, 0);
	printf("KMOD: shimctl hold: socket %d bind %d listen %d\n", s.status, b.status, l.status);
	fflush(stdout);
	if (s.status || b.status || l.status)
		return 1;
	for (;;)
		pause();
}

#define ACCEPT_BULK (1 << 20)

/* Accept through the module: a client on the guest's own stack connects
 * to the instance's listener; the listener file becomes readable with one
 * accept token, Accept hands over a socket file for the connection, and
 * bytes flow both ways through it. */
static void accept_path(int dev, int l)
{
	struct pollfd p = { .fd = l, .events = POLLIN };
	/* Never writable, as Linux's listeners. */
	struct pollfd po = { .fd = l, .events = POLLIN | POLLOUT };
	report("listener-idle", poll(&po, 1, 0) == 0, "listener readable or writable with no connection");
	int fl = fcntl(l, F_GETFL);
	fcntl(l, F_SETFL, fl | O_NONBLOCK);
	char tok;
	errno = 0;
	report("no-token-eagain", read(l, &tok, 1) < 0 && errno == EAGAIN,
	       "a non-blocking token read with none queued was not EAGAIN");
	fcntl(l, F_SETFL, fl);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	memcpy(&a.sin_addr, LOOPBACK, 4);
	int cr = connect(c, (struct sockaddr *)&a, sizeof a);
	report("client-connects", cr == 0, "connect to the instance's listener");
	p.revents = 0;
	report("listener-readable", poll(&p, 1, 10000) == 1 && (p.revents & POLLIN),
	       "listener not readable after a connection");
	report("token", read(l, &tok, 1) == 1, "no accept token");
	struct reply r = control(dev, OP_ACCEPT, l, 0, 0, 0);
	report("accept", r.status == 0 && r.fd >= 0 && r.family == 2,
	       "Accept did not hand over a socket file with an IPv4 peer");
	if (r.fd < 0 || cr != 0) {
		close(c);
		return;
	}
	p.revents = 0;
	report("token-consumed", poll(&p, 1, 0) == 0, "listener still readable after accept");
	const char line[] = "accepted through ins.ko\n";
	char got[64] = "";
	ssize_t w = write(c, line, sizeof line - 1);
	size_t have = 0;
	while (w > 0 && have < sizeof line - 1) {
		ssize_t n = read(r.fd, got + have, sizeof got - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	report("accepted-reads", have == sizeof line - 1 && memcmp(got, line, have) == 0,
	       "the client's line did not arrive on the accepted file");
	/* 1 MiB from the accepted file to the client (a forked writer), then
	 * its close is the client's end of file. */
	pid_t child = fork();
	if (child == 0) {
		static unsigned char out[ACCEPT_BULK];
		for (size_t i = 0; i < sizeof out; i++)
			out[i] = (unsigned char)(i * 7 + (i >> 12));
		size_t off = 0;
		while (off < sizeof out) {
			ssize_t n = write(r.fd, out + off, sizeof out - off);
			if (n <= 0)
				_exit(1);
			off += (size_t)n;
		}
		_exit(0);
	}
	close(r.fd);
	static unsigned char in[ACCEPT_BULK + 1];
	size_t got_n = 0;
	for (;;) {
		ssize_t n = read(c, in + got_n, sizeof in - got_n);
		if (n <= 0)
			break;
		got_n += (size_t)n;
	}
	int ok = got_n == ACCEPT_BULK;
	for (size_t i = 0; ok && i < ACCEPT_BULK; i++)
		ok = in[i] == (unsigned char)(i * 7 + (i >> 12));
	int st = -1;
	waitpid(child, &st, 0);
	report("accepted-bulk", ok && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "1 MiB from the accepted file did not reach the client byte-exact, then EOF");
	close(c);
}

/* Non-blocking connects through the module (as curl and nginx's upstreams
 * make them): EINPROGRESS at once, the socket file becomes writable when
 * the instance's connect finishes, and SO_ERROR (TakeError) tells how it
 * ended. One to the instance's own listener `l` (accepted through the
 * module, a line each way), one to a port nobody listens on
 * (ECONNREFUSED once, then 0). */
static void nonblocking_connect(int dev, int l)
{
	struct reply s = control(dev, OP_SOCKET, -1, 2, 1, 0);
	struct reply r = control_at(dev, OP_CONNECT, s.fd, 1, 0, LOOPBACK, PORT);
	report("nb-connect-einprogress", s.status == 0 && r.status == EINPROGRESS,
	       "a non-blocking Connect to the listener was not EINPROGRESS");
	struct pollfd p = { .fd = s.fd, .events = POLLOUT };
	report("nb-connect-writable", poll(&p, 1, 10000) == 1 && (p.revents & POLLOUT),
	       "the connecting socket file did not become writable");
	struct reply e = control(dev, OP_TAKE_ERROR, s.fd, 0, 0, 0);
	report("nb-connect-so-error-0", e.status == 0 && e.a0 == 0,
	       "SO_ERROR after the connect was not 0");
	struct pollfd lp = { .fd = l, .events = POLLIN };
	char tok;
	int have_token = poll(&lp, 1, 10000) == 1 && read(l, &tok, 1) == 1;
	struct reply a = control(dev, OP_ACCEPT, l, 0, 0, 0);
	report("nb-connect-accepted", have_token && a.status == 0 && a.fd >= 0,
	       "the listener did not hand over the non-blocking connection");
	const char ping[] = "nb ping\n", pong[] = "nb pong\n";
	char got[16] = "", back[16] = "", peeked[16] = "";
	/* INS_IOC_PEEK: the bytes, left in place (the read below gets them
	 * again); with nothing left, PEEK_DONTWAIT is EAGAIN. */
	int wrote = a.fd >= 0 && write(s.fd, ping, sizeof ping - 1) == sizeof ping - 1;
	struct ins_peek pk = { .buf = (uintptr_t)peeked, .len = sizeof ping - 1 };
	struct pollfd ap = { .fd = a.fd, .events = POLLIN };
	int pn = -1;
	if (wrote && poll(&ap, 1, 10000) == 1) {
		/* The bytes may arrive in more than one piece: peek until all
		 * of the line is there (bounded). */
		for (int i = 0; i < 100; i++) {
			pn = ioctl(a.fd, INS_IOC_PEEK, &pk);
			if (pn == (int)(sizeof ping - 1) || pn < 0)
				break;
			usleep(20000);
		}
	}
	report("peek-ioctl", pn == (int)(sizeof ping - 1) && memcmp(peeked, ping, sizeof ping - 1) == 0,
	       "INS_IOC_PEEK did not return the line");
	int ok = wrote && read(a.fd, got, sizeof ping - 1) == sizeof ping - 1 &&
		 write(a.fd, pong, sizeof pong - 1) == sizeof pong - 1 &&
		 read(s.fd, back, sizeof pong - 1) == sizeof pong - 1;
	report("nb-connect-bytes",
	       ok && memcmp(got, ping, sizeof ping - 1) == 0 &&
		       memcmp(back, pong, sizeof pong - 1) == 0,
	       "a line each way over the non-blocking connection");
	pk.flags = PEEK_DONTWAIT;
	errno = 0;
	report("peek-ioctl-empty", a.fd >= 0 && ioctl(a.fd, INS_IOC_PEEK, &pk) < 0 && errno == EAGAIN,
	       "INS_IOC_PEEK with nothing to read and PEEK_DONTWAIT was not EAGAIN");
	errno = 0;
	pk.flags = 0;
	report("peek-ioctl-listener", ioctl(l, INS_IOC_PEEK, &pk) < 0 && errno == ENOTCONN,
	       "INS_IOC_PEEK on a listening socket file was not ENOTCONN");
	if (a.fd >= 0)
		close(a.fd);
	close(s.fd);

	struct reply s3 = control(dev, OP_SOCKET, -1, 2, 1, 0);
	r = control_at(dev, OP_CONNECT, s3.fd, 1, 0, LOOPBACK, PORT + 2);
	report("nb-refused-einprogress", s3.status == 0 && r.status == EINPROGRESS,
	       "a non-blocking Connect to a closed port was not EINPROGRESS");
	p.fd = s3.fd;
	p.revents = 0;
	report("nb-refused-ready", poll(&p, 1, 10000) == 1 && (p.revents & POLLOUT),
	       "the refused socket file did not become writable");
	/* As Linux's tcp_poll after a refused connect: hung up, and in error
	 * until SO_ERROR takes it. */
	report("nb-refused-pollerr", (p.revents & (POLLHUP | POLLERR)) == (POLLHUP | POLLERR),
	       "the refused socket file did not poll POLLHUP|POLLERR");
	e = control(dev, OP_TAKE_ERROR, s3.fd, 0, 0, 0);
	struct reply e2 = control(dev, OP_TAKE_ERROR, s3.fd, 0, 0, 0);
	report("nb-refused-so-error", e.status == 0 && e.a0 == ECONNREFUSED && e2.a0 == 0,
	       "SO_ERROR was not ECONNREFUSED once, then 0");
	p.revents = 0;
	report("nb-refused-pollhup-after",
	       poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) && !(p.revents & POLLERR),
	       "after SO_ERROR took the error: not POLLHUP without POLLERR");
	/* The error taken, a read is the end of the stream (0), as on Linux
	 * (the connection is shut both ways). */
	char b;
	errno = 0;
	report("nb-refused-read", read(s3.fd, &b, 1) == 0,
	       "a read on the refused socket file after SO_ERROR was not 0");
	close(s3.fd);
}

int main(int argc, char **argv)
{
	int dev = open("/dev/ins", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		report("open", 0, "open /dev/ins");
		return 1;
	}
	if (argc > 1 && strcmp(argv[1], "hold") == 0)
		return hold(dev);
	/* Settings need CAP_NET_ADMIN of whoever opened /dev/ins: a process
	 * that dropped to uid 65534 before opening it gets EPERM. */
	pid_t unpriv = fork();
	if (unpriv == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(2);
		int w = open("/dev/ins", O_WRONLY | O_CLOEXEC);
		if (w < 0)
			_exit(3);
		_exit(write(w, "max_opts=16", 11) < 0 && errno == EPERM ? 0 : 1);
	}
	int ust = -1;
	waitpid(unpriv, &ust, 0);
	report("settings-eperm-unprivileged", WIFEXITED(ust) && WEXITSTATUS(ust) == 0,
	       "an unprivileged opener's settings write was not EPERM");
	/* The Xen transport's offer: not in a Xen guest, ENODEV, no fd;
	 * without CAP_NET_ADMIN, EPERM first. */
	uint32_t refs[1024];
	struct ins_xen_offer xo = { .domid = 1, .ring_capacity = 65536, .max_frame = 4096,
				    .max_refs = 1024, .fd = -1, .refs = (uintptr_t)refs };
	errno = 0;
	int xr = ioctl(dev, INS_IOC_XEN_OFFER, &xo);
	report("xen-offer-enodev-off-xen", xr < 0 && errno == ENODEV && xo.fd == -1,
	       "INS_IOC_XEN_OFFER outside Xen was not ENODEV");
	pid_t xunpriv = fork();
	if (xunpriv == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(2);
		_exit(ioctl(dev, INS_IOC_XEN_OFFER, &xo) < 0 && errno == EPERM ? 0 : 1);
	}
	waitpid(xunpriv, &ust, 0);
	report("xen-offer-eperm-unprivileged", WIFEXITED(ust) && WEXITSTATUS(ust) == 0,
	       "an unprivileged INS_IOC_XEN_OFFER was not EPERM");
	report("not-yet-listening", !listening(), "port already listening before the test");
	struct reply s = control(dev, OP_SOCKET, -1, 2, 1, 0);
	report("socket", s.status == 0 && s.fd >= 0, "Socket(AF_INET, SOCK_STREAM)");
	if (s.fd < 0)
		return 1;
	char link[64] = "";
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", s.fd);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n > 0)
		link[n] = 0;
	report("socket-file", strcmp(link, "anon_inode:[ins-socket]") == 0, link);
	char b;
	errno = 0;
	report("read-unconnected", read(s.fd, &b, 1) < 0 && errno == ENOTCONN,
	       "read on a socket file did not fail ENOTCONN");

	struct reply r = control(dev, OP_BIND, s.fd, 0, 0, PORT);
	report("bind", r.status == 0, "Bind(0.0.0.0:8097) through the instance");
	r = control(dev, OP_LISTEN, s.fd, 16, 0, 0);
	report("listen", r.status == 0, "Listen(16) through the instance");
	report("instance-listens", listening_within(1, 30),
	       "no LISTEN socket on 8097 in /proc/net/tcp");
	r = control(dev, OP_GETSOCKNAME, s.fd, 0, 0, 0);
	report("getsockname", r.status == 0 && r.family == 2 && r.port == PORT,
	       "GetSockName does not say 0.0.0.0:8097");
	accept_path(dev, s.fd);

	/* driver-core's port table answers a second bind on the port. */
	struct reply s2 = control(dev, OP_SOCKET, -1, 2, 1, 0);
	r = control(dev, OP_BIND, s2.fd, 0, 0, PORT);
	report("bind-in-use", s2.status == 0 && r.status == EADDRINUSE,
	       "a second bind on 8097 was not EADDRINUSE");
	nonblocking_connect(dev, s.fd);
	/* Only our socket files name a socket. */
	int null = open("/dev/null", O_RDWR);
	r = control(dev, OP_BIND, null, 0, 0, PORT + 1);
	report("not-a-socket", r.status == ENOTSOCK, "Bind on /dev/null was not ENOTSOCK");
	close(null);
	/* Garbage is refused before it reaches driver-core. */
	struct ins_control bad;
	memset(&bad, 0, sizeof bad);
	bad.fd = -1;
	bad.len = 112;
	put16(bad.packet, 77); /* no such op */
	errno = 0;
	report("bad-packet", ioctl(dev, INS_IOC_CONTROL, &bad) < 0 && errno == EINVAL,
	       "an unknown op was accepted");

	data_path(dev);

	/* The app lets go: the instance closes its listener. */
	close(s.fd);
	report("close-unlistens", listening_within(0, 30),
	       "LISTEN socket on 8097 still there after close");
	close(s2.fd);
	close(dev);
	return failures ? 1 : 0;
}

