// The Netlink module: Baton's virtual IPs.
//
// - `VIPAddress` parses `192.0.2.10/24` and `2001:db8::10/64` (no prefix: /32 or /128) and
//   says exactly what is wrong with a bad one.
// - `VIPAddressManager` adds, removes and lists an interface's addresses with RTM_NEWADDR,
//   RTM_DELADDR and RTM_GETADDR dumps over libmnl (no `ip` command). Adding a present address
//   and removing an absent one are no-ops that say so (`.alreadyPresent`, `.absent`). IPv6
//   addresses skip duplicate address detection (IFA_F_NODAD).
// - `VIPAnnouncer` sends gratuitous ARP requests ("who-has VIP tell VIP" to the broadcast MAC)
//   and unsolicited IPv6 neighbor advertisements (override flag set) over an AF_PACKET socket,
//   in bursts (default 5 × 200 ms) or one at a time for periodic refresh.
// - Both work in the process's network namespace or a named one (`/var/run/netns/NAME`): their
//   sockets are opened on a dedicated thread that entered the namespace with setns, and every
//   blocking call runs on that thread, never on the Swift concurrency pool.
// - Every failure is a `NetlinkError` naming the operation, interface, address and errno, and the
//   capability that is missing (CAP_NET_ADMIN for addresses, CAP_NET_RAW for announcements).
//
// The message and packet builders (`RouteMessages`, `AnnouncementPackets`) are pure functions,
// checked byte by byte in NetlinkTests; the integration tests run as root in private namespaces.

