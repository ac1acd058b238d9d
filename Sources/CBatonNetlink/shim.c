#define _GNU_SOURCE
#include "CBatonNetlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <net/ethernet.h>
#include <netpacket/packet.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int cbn_enter_network_namespace(const char *path, int *stage) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *stage = 1;
        return -1;
    }
    if (setns(fd, CLONE_NEWNET) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        *stage = 2;
        return -1;
    }
    close(fd);
    *stage = 0;
    return 0;
}

int cbn_packet_socket(void) {
    return socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
}

long cbn_packet_send(int fd, int ifindex, const uint8_t *destination,
                     const uint8_t *frame, size_t length) {
    struct sockaddr_ll address;
    memset(&address, 0, sizeof(address));
    address.sll_family = AF_PACKET;
    address.sll_ifindex = ifindex;
    address.sll_halen = ETH_ALEN;
    memcpy(address.sll_addr, destination, ETH_ALEN);
    ssize_t sent;
    do {
        sent = sendto(fd, frame, length, 0, (const struct sockaddr *)&address, sizeof(address));
    } while (sent < 0 && errno == EINTR);
    return (long)sent;
}

int cbn_set_receive_timeout(int fd, int milliseconds) {
    struct timeval timeout;
    timeout.tv_sec = milliseconds / 1000;
    timeout.tv_usec = (milliseconds % 1000) * 1000;
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
}

int cbn_arp_socket(int ifindex) {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (fd < 0) return -1;
    struct sockaddr_ll address;
    memset(&address, 0, sizeof(address));
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ARP);
    address.sll_ifindex = ifindex;
    if (bind(fd, (const struct sockaddr *)&address, sizeof(address)) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

long cbn_packet_receive(int fd, uint8_t *buffer, size_t capacity) {
    ssize_t received;
    do {
        received = recv(fd, buffer, capacity, 0);
    } while (received < 0 && errno == EINTR);
    return (long)received;
}

void cbn_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof(truncated) - 1);
    truncated[sizeof(truncated) - 1] = '\0';
    pthread_setname_np(pthread_self(), truncated);
}
