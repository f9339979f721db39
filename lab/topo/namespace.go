package topo

import "github.com/ctguard/ctguard/internal/netns"

// Namespace is one of the lab's named network namespaces (visible to
// "ip netns list" while the topology lives). Its Do runs a function on a
// thread switched into it: sockets the function creates and processes it
// starts belong to the namespace.
type Namespace = netns.NS
