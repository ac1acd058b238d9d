// libmnl and the rtnetlink headers the Netlink module builds and parses messages with.
// A system library target: never a product. Packet sockets and setns live in CBatonNetlink.
#ifndef C_MNL_SHIM_H
#define C_MNL_SHIM_H

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>

#endif
