// libsystemd's public headers, for the Systemd module. Never a product: only Systemd imports it.
// sd-bus's variadic calls (sd_bus_call_method, sd_bus_message_append, ...) do not import into
// Swift; Systemd uses the message-building API (append_basic, open_container, read_basic, ...).
#ifndef C_SYSTEMD_SHIM_H
#define C_SYSTEMD_SHIM_H

#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <systemd/sd-login.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <poll.h>

#endif
