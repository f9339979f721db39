// Package flows is ctguard's kernel edge to the conntrack table: it dumps TCP
// flows, streams conntrack events and sets or clears the per-flow
// IP_CT_TCP_FLAG_BE_LIBERAL flag with flags-only ctnetlink updates, all bound
// to one network namespace.
//
// # Flags-only updates
//
// SetLiberal and ClearLiberal send an IPCTNL_MSG_CT_NEW message without
// NLM_F_CREATE or NLM_F_EXCL, so the kernel only updates an existing entry.
// The message carries the original tuple, the zone, and the TCP protoinfo
// flags of the chosen directions as {flags, mask} pairs. It never carries the
// TCP state or the window scales (ti-mo/conntrack's Update sends both and
// would clobber them). A flow that vanished meanwhile yields ErrFlowGone.
//
// # Ownership mark
//
// Rollback must clear BE_LIBERAL only on flows ctguard flagged: the kernel
// sets the flag itself on flows it picks up mid-stream, and those must keep
// it. The ownership must also survive a ctguard restart, so it lives in the
// kernel, not in ctguard's memory: every SetLiberal sets one conntrack mark
// bit (DefaultMarkBit, configurable) in the same update message, with
// CTA_MARK and CTA_MARK_MASK so that only that bit of the mark changes. The
// flag and the bit land atomically. Rollback dumps the table, keeps the flows
// whose mark carries the bit, and clears the flag and the bit together with
// ClearLiberal. Flows flagged by anybody else (the kernel, conntrack -U, a
// SetLiberal with mark 0) never carry the bit and are left alone.
//
// # Which directions are ctguard's
//
// One bit says which flows are ctguard's, not which directions. Two rules
// make that enough by construction:
//
//   - ctguard sets only the wanted directions a flow lacks (never re-sets a
//     direction already liberal), and marks a flow only when it set at least
//     one direction: a flow already liberal in every wanted direction stays
//     unmarked, whoever made it liberal.
//   - rollback clears, on marked flows, only directions ctguard may have
//     set: those of the given set (the union of the directions of every
//     per-flow policy ctguard applied, REPLY by default) that are liberal,
//     then the bit (ClearLiberal with no direction clears the bit only).
//
// The kernel makes a flow liberal in both directions at once (mid-stream
// pickup, flowtable offload), as conntrack -U does: such a flow never lacks
// a wanted direction, so it is never marked and rollback never touches it.
// The one residual case needs a third party that sets a single direction D
// before ctguard flags another direction of the same flow, with D among the
// rollback's directions (e.g. a tool setting only ORIGINAL and a policy
// wanting [original, reply]): rollback then clears D too. Telling these
// apart would take one mark bit per direction, i.e. a second bit of the
// mark ctguard does not own today.
//
// # Events
//
// Subscribe opens a dedicated event socket (groups NEW, UPDATE, DESTROY)
// with a receive buffer forced to a deliberate size, and one reader decodes
// each message with ti-mo/conntrack's Event.Unmarshal. When the kernel could
// not queue events (ENOBUFS) Receive reports ErrEventsLost and counts it; the
// socket stays usable and the caller resyncs with a dump. Reliable delivery
// (NETLINK_BROADCAST_ERROR / NETLINK_NO_ENOBUFS) is never enabled: on a NAT
// box it would make the kernel drop packets whose events it cannot deliver.
package flows
