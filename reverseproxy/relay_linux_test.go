//go:build linux

package reverseproxy

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeekQueued covers the fallback for kernels that do not honour
// MSG_TRUNC on TCP: bytes queued, nothing yet (EAGAIN), then EOF.
func TestPeekQueued(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	rc, err := s.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	peek := func() (n uintptr, errno syscall.Errno) {
		require.NoError(t, rc.Control(func(fd uintptr) { n, errno = peekQueued(fd) }))
		return n, errno
	}

	_, errno := peek()
	assert.Equal(t, syscall.EAGAIN, errno)
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { n, errno := peek(); return n == 5 && errno == 0 }, 5*time.Second, time.Millisecond)
	buf := make([]byte, 5)
	_, err = s.Read(buf)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	require.Eventually(t, func() bool { n, errno := peek(); return n == 0 && errno == 0 }, 5*time.Second, time.Millisecond, "EOF")
}
