//go:build unix

package upgrade

import (
	"net"
	"syscall"
)

// writeNow writes to a TCP connection as much of b as its socket takes
// without waiting, with no deadline to set and clear, and returns how much
// that was; raw reports whether nc is one it can write that way. It leaves
// errors, and the rest of b, to a net.Conn Write.
func writeNow(nc net.Conn, b []byte) (n int, raw bool) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	// Inlined and devirtualized: the RawConn does not escape, and
	// neither does the function.
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	_ = rc.Write(func(fd uintptr) bool {
		// A partial write, or an error (EAGAIN when the socket's
		// buffer is full; Go's signal handlers restart an interrupted
		// write), is left to the caller.
		n, _ = syscall.Write(int(fd), b)
		return true // never wait: the caller does, under a deadline
	})
	n = max(n, 0)
	return n, true
}
