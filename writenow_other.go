//go:build !unix

package upgrade

import "net"

// writeNow writes nothing where the socket cannot be written without
// waiting: the caller writes under a deadline.
func writeNow(nc net.Conn, b []byte) (n int, raw bool) { return 0, false }
