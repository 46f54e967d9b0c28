/* udpq: send one UDP datagram (argv[3]) to argv[1]:argv[2], print the reply
 * (lab helper: busybox nc has no UDP mode). Exit 1 on timeout (2 s). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: udpq ip port message\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sendto(s, argv[3], strlen(argv[3]), 0, (struct sockaddr *)&a, sizeof a);
    char buf[2048];
    ssize_t n = recv(s, buf, sizeof buf - 1, 0);
    if (n < 0)
        return 1;
    buf[n] = 0;
    printf("%s\n", buf);
    return 0;
}
