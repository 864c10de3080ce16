//go:build !linux

package reverseproxy

import "net"

// copyConn copies src to dst until src's EOF (a nil error) or an error,
// calling moved after every write.
func copyConn(dst, src net.Conn, moved func()) (int64, error) {
	return copyBuffered(dst, src, moved)
}
