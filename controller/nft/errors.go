package nft

import "errors"

// ErrInvalidTable is returned by Replace (Client and Fake alike) for a
// table the kernel would reject or ctguard could not read back: a rule
// naming a missing counter or set, a set element that does not parse,
// overlapping interval elements, an unrecognised rule. Nothing is changed.
var ErrInvalidTable = errors.New("invalid ctguard table")
