// Linux calls the Netlink module needs that the Glibc module does not expose cleanly: setns
// (behind _GNU_SOURCE) and AF_PACKET sends (struct sockaddr_ll and its flexible address field).
// Never a product: only the Netlink target imports it.
#ifndef C_BATON_NETLINK_H
#define C_BATON_NETLINK_H

#include <stddef.h>
#include <stdint.h>

/// Opens `path` (a network namespace file such as /var/run/netns/NAME) and moves the calling
/// thread into that network namespace. Returns 0, or -1 with errno set; `*stage` says which call
/// failed (1: open, 2: setns).
int cbn_enter_network_namespace(const char *path, int *stage);

/// Opens an AF_PACKET/SOCK_RAW socket that receives nothing (protocol 0), close-on-exec.
/// Returns the descriptor, or -1 with errno set.
int cbn_packet_socket(void);

/// Sends one complete Ethernet frame (header included) out of interface `ifindex`, to the
/// 6-byte link-layer `destination`. Returns the number of bytes sent, or -1 with errno set.
long cbn_packet_send(int fd, int ifindex, const uint8_t *destination,
                     const uint8_t *frame, size_t length);

/// Sets SO_RCVTIMEO on `fd` to `milliseconds`. Returns 0, or -1 with errno set.
int cbn_set_receive_timeout(int fd, int milliseconds);

/// Opens an AF_PACKET/SOCK_RAW socket that receives the ARP frames of interface `ifindex`,
/// close-on-exec. Returns the descriptor, or -1 with errno set.
int cbn_arp_socket(int ifindex);

/// Receives one frame into `buffer`, retrying on EINTR. Returns its length, or -1 with errno set
/// (EAGAIN when the socket's receive timeout passed).
long cbn_packet_receive(int fd, uint8_t *buffer, size_t capacity);

/// Names the calling thread (at most 15 bytes are kept), for `top -H` and debuggers.
void cbn_set_thread_name(const char *name);

#endif
