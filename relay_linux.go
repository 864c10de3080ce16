//go:build linux

package upgrade

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
// (MSG_PEEK of one byte); bytes queued while a burst was relayed are
// found with FIONREAD and relayed at once, without a poll.
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
			if n := queued(fd); n > 0 {
				avail = n
				return true
			}
			var b [1]byte
			n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
				syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
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
			// A byte arrived between FIONREAD and the poll: count again.
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

// queued returns the bytes waiting in the socket's receive queue
// (FIONREAD), or 0 if it cannot tell.
func queued(fd uintptr) int {
	var n int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return 0
	}
	return int(n)
}
