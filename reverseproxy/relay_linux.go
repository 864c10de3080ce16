//go:build linux

package reverseproxy

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// copyConn copies src to dst until src's EOF (a nil error) or an error,
// calling moved after every burst of bytes.
//
// Between two TCP connections the bytes never pass through user space:
// each burst is one io.Copy limited to the bytes src has queued, which
// net/http's TCPConn.ReadFrom turns into splice(2) through a pipe taken
// from, and given back to, the runtime's pool. Waiting for the next
// burst holds no pipe: a plain io.Copy between the two would park in
// splice holding a pipe (two descriptors) per direction, six descriptors
// for an idle pair instead of two. The wait is a poll for readability
// that counts the queued bytes without reading them
// (MSG_PEEK|MSG_TRUNC); bytes queued while a burst was relayed are found
// that way and relayed at once, without waiting.
func copyConn(dst, src net.Conn, moved func()) (int64, error) {
	d, ok1 := dst.(*net.TCPConn)
	s, ok2 := src.(*net.TCPConn)
	if !ok1 || !ok2 {
		return copyBuffered(dst, src, moved)
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return copyBuffered(dst, src, moved)
	}
	var (
		avail int   // bytes src has queued
		eof   bool  // src has reached EOF
		perr  error // a socket error found by the poll
		lr    = &io.LimitedReader{R: s}
	)
	// ready is called by rc.Read, which waits for readability each time
	// it returns false. It is made once: rc.Read would allocate a new
	// closure per call.
	ready := func(fd uintptr) bool {
		for {
			// MSG_PEEK|MSG_TRUNC on TCP counts the queued bytes
			// without copying them (EOF: 0; nothing yet: EAGAIN).
			n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, 0, maxBurst,
				syscall.MSG_PEEK|syscall.MSG_TRUNC|syscall.MSG_DONTWAIT, 0, 0)
			if errno == syscall.EFAULT {
				// A kernel that copies despite MSG_TRUNC: count with
				// FIONREAD, then look for EOF with a one-byte peek.
				n, errno = peekQueued(fd)
			}
			switch {
			case errno == syscall.EINTR:
				continue
			case errno == syscall.EAGAIN:
				return false
			case errno != 0:
				perr = errno
				return true
			case n == 0:
				eof = true
				return true
			}
			avail = int(n)
			return true
		}
	}
	var total int64
	for {
		if err := rc.Read(ready); err != nil {
			return total, err
		}
		switch {
		case perr != nil:
			return total, &net.OpError{Op: "read", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: perr}
		case eof:
			return total, nil
		}
		lr.N = int64(avail)
		n, err := io.Copy(d, lr)
		total += n
		moved()
		if err != nil {
			return total, err
		}
	}
}

// maxBurst bounds the bytes one burst relays.
const maxBurst = 4 << 20

// peekQueued returns the bytes queued on the socket (FIONREAD), or, when
// there are none, the result of a one-byte MSG_PEEK: 0 at EOF, EAGAIN
// while nothing has arrived.
func peekQueued(fd uintptr) (uintptr, syscall.Errno) {
	var q int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&q))); errno == 0 && q > 0 {
		return uintptr(q), 0
	}
	var b [1]byte
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return n, errno
}
