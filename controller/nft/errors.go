package nft

import "errors"

// ErrInvalidTable is returned by Replace (Client and Fake alike) for a
// table the kernel would reject or ctguard could not read back: a rule
// naming a missing counter or set, a set element that does not parse,
// overlapping interval elements, an unrecognised rule. Nothing is changed.
var ErrInvalidTable = errors.New("invalid ctguard table")

// ErrUnrecognised is returned by Read when table ip or ip6 ctguard (the
// gate's tables on kernels without nft_queue) holds what ctguard never
// creates there. Nothing is changed.
var ErrUnrecognised = errors.New("unrecognised object in table ip or ip6 ctguard")

// ErrNoQueue is returned by Replace when the kernel takes neither encoding
// of a gate rule's NFQUEUE verdict (no nft_queue, no xt NFQUEUE target):
// the gate cannot run; nothing is changed.
var ErrNoQueue = errors.New("the kernel has no NFQUEUE support for the gate (neither nft_queue nor the xt NFQUEUE target)")
