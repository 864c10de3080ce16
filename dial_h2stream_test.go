package upgrade

import (
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStreamOpError: the stream's errors are *net.OpError naming the
// shared connection's addresses.
func TestStreamOpError(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2}
	s := &h2Stream{c: &h2Conn{local: local, remote: remote}}
	err := s.opError("read", os.ErrDeadlineExceeded)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "tcp", oe.Net)
	assert.Equal(t, local, oe.Source)
	assert.Equal(t, remote, oe.Addr)
	assert.True(t, oe.Timeout())
}
