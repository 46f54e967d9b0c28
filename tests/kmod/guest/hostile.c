// SPDX-License-Identifier: GPL-2.0
/*
 * A hostile instance for the `ins` module (protvm-driver/kmod,
 * instance.rs). Not an INS instance: a hand-written peer that joins over
 * /dev/ins (INS_IOC_INSTANCE, mmap, a 64-byte Hello(Instance) written into
 * the instance->driver ring by hand, the doorbell write), checks the
 * module's Hello(Driver) and that /dev/ins lists it as live, then publishes
 * a garbage producer index and rings again. The module must mark only this
 * channel dead (poll: POLLHUP|POLLERR, doorbell: end of file, /dev/ins: dead)
 * without an oops, and refuse bad requests and mappings.
 *
 * Prints `KMODTEST PASS <name>` or `KMODTEST FAIL <name>: <why>`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct ins_instance {
	uint32_t flags;
	uint32_t ring_capacity;
	uint32_t max_frame;
	int32_t fd;
	uint64_t to_driver_offset;
	uint64_t region_len;
};
#define INS_IOC_INSTANCE _IOWR('I', 2, struct ins_instance)
#define RING 4096
#define FRAME 1024
/* ins-protocol ring header: prod at +0, prod_event +64, cons +128,
 * cons_event +192, data from +256. */
#define PROD 0
#define CONS 128
#define DATA 256

static int failures;

static void report(const char *name, int ok, const char *why)
{
	if (ok) {
		printf("KMODTEST PASS hostile-%s\n", name);
	} else {
		printf("KMODTEST FAIL hostile-%s: %s (errno %d %s)\n", name, why, errno,
		       strerror(errno));
		failures++;
	}
	fflush(stdout);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const volatile uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* The status line of the instance with `pid`, or "" (static buffer). */
static const char *status_of(int pid)
{
	static char buf[8192], line[512];
	int fd = open("/dev/ins", O_RDONLY);
	if (fd < 0)
		return "";
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		return "";
	buf[n] = 0;
	char want[32];
	snprintf(want, sizeof want, " pid %d ", pid);
	line[0] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		if (strstr(l, want)) {
			snprintf(line, sizeof line, "%s", l);
		}
	}
	return line;
}

static int ring_doorbell(int fd)
{
	uint64_t one = 1;
	return write(fd, &one, 8) == 8 ? 0 : -1;
}

int main(void)
{
	int dev = open("/dev/ins", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		report("open", 0, "open /dev/ins");
		return 1;
	}
	/* Only CAP_NET_ADMIN may be an instance (it sees every socket). */
	pid_t child = fork();
	if (child == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		struct ins_instance q = { .ring_capacity = RING, .max_frame = FRAME, .fd = -1 };
		_exit(ioctl(dev, INS_IOC_INSTANCE, &q) < 0 && errno == EPERM ? 0 : 1);
	}
	int wst = -1;
	waitpid(child, &wst, 0);
	report("needs-cap-net-admin", WIFEXITED(wst) && WEXITSTATUS(wst) == 0,
	       "an unprivileged process got an instance channel");
	/* Bad requests are refused. */
	struct ins_instance bad = { .ring_capacity = 3000, .max_frame = 1024 };
	errno = 0;
	int refused = ioctl(dev, INS_IOC_INSTANCE, &bad) < 0 && errno == EINVAL;
	struct ins_instance small = { .ring_capacity = RING, .max_frame = 512 };
	errno = 0;
	refused = refused && ioctl(dev, INS_IOC_INSTANCE, &small) < 0 && errno == EINVAL;
	report("bad-request", refused, "ring capacity 3000 or frames of 512 bytes accepted");

	struct ins_instance req = { .flags = 1, .ring_capacity = RING, .max_frame = FRAME, .fd = -1 };
	if (ioctl(dev, INS_IOC_INSTANCE, &req) < 0 || req.fd < 0) {
		report("channel", 0, "INS_IOC_INSTANCE");
		return 1;
	}
	int ch = req.fd;
	report("channel", req.region_len == 2 * 8192 && req.to_driver_offset == 8192,
	       "unexpected layout");
	errno = 0;
	void *wrong = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ch, 0);
	report("bad-mmap", wrong == MAP_FAILED && errno == EINVAL, "partial mapping accepted");
	errno = 0;
	wrong = mmap(NULL, req.region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, ch, 0);
	report("private-mmap", wrong == MAP_FAILED && errno == EINVAL, "private mapping accepted");
	volatile uint8_t *r = mmap(NULL, req.region_len, PROT_READ | PROT_WRITE, MAP_SHARED, ch, 0);
	if (r == MAP_FAILED) {
		report("mmap", 0, "mmap");
		return 1;
	}
	/* The module's hello: the first frame on ring driver->instance. */
	uint32_t prod = __atomic_load_n((volatile uint32_t *)(r + PROD), __ATOMIC_ACQUIRE);
	uint32_t len = get32(r + DATA);
	report("driver-hello",
	       prod == 72 && len == 64 && get32(r + DATA + 4) == 0x01534e49 &&
		       (get32(r + DATA + 8) & 0xffff) == 1,
	       "no Hello(Driver) on the ring");

	/* Our hello, by hand, into ring instance->driver. */
	volatile uint8_t *up = r + req.to_driver_offset;
	uint8_t frame[72] = { 0 };
	put32(frame, 64);
	uint8_t *h = frame + 4;
	put32(h + 0, 0x01534e49);          /* "INS\x01" */
	put32(h + 4, 2 | 2u << 16);        /* role instance, version max 2 */
	put32(h + 8, 2);                   /* version min 2, reserved 0 */
	put32(h + 12, 99);                 /* instance id */
	put32(h + 16, RING);               /* ring we produce into */
	put32(h + 20, FRAME);              /* largest frame we accept */
	put32(h + 24, 16);                 /* max sockets */
	put32(h + 28, (uint32_t)getpid()); /* pid */
	put32(h + 40, 65536);              /* window */
	for (size_t i = 0; i < sizeof frame; i++)
		up[DATA + i] = frame[i];
	__atomic_store_n((volatile uint32_t *)(up + PROD), 72, __ATOMIC_RELEASE);
	report("hello-doorbell", ring_doorbell(ch) == 0, "doorbell write");
	const char *st = status_of(getpid());
	printf("KMOD: hostile instance: %s\n", st);
	report("joined", strstr(st, " live ") != NULL, st);

	/* Garbage: a producer index far past the capacity. */
	__atomic_store_n((volatile uint32_t *)(up + PROD), 0x7ffff000u, __ATOMIC_RELEASE);
	ring_doorbell(ch);
	struct pollfd p = { .fd = ch, .events = POLLIN | POLLOUT };
	int n = poll(&p, 1, 1000);
	report("dead-poll", n == 1 && (p.revents & (POLLHUP | POLLERR)) == (POLLHUP | POLLERR),
	       "no POLLHUP|POLLERR after a garbage index");
	/* Its doorbell is ignored now, and reads see end of file. */
	uint64_t v;
	report("dead-doorbell", ring_doorbell(ch) == 0 && read(ch, &v, 8) == 0,
	       "the dead channel's doorbell did not read end of file");
	st = status_of(getpid());
	printf("KMOD: hostile instance: %s\n", st);
	report("marked-dead", strstr(st, " dead ") != NULL && strstr(st, "corrupt ring") != NULL,
	       st);
	/* The module never reads the instance's ring again: what we write
	 * now changes nothing. */
	__atomic_store_n((volatile uint32_t *)(up + CONS), 0xdeadbee8u, __ATOMIC_RELEASE);
	munmap((void *)r, req.region_len);
	close(ch);
	close(dev);
	return failures ? 1 : 0;
}
