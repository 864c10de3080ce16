package wiretest

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Timeout bounds a test's wait on the network: a Conn's deadline (set
// once, when it is dialled) and Serve's wait for a hijacked connection.
const Timeout = 20 * time.Second

// Conn is a raw client connection for tests: it writes exact bytes and
// reads responses as sent. Every operation is bounded by its deadline, a
// failure fails the test, and the connection is closed at the end of the
// test. A Conn is an io.ReadWriter: Read reads through BR, Write writes
// to NC.
type Conn struct {
	NC *net.TCPConn  // the connection, for writes and half-closes
	BR *bufio.Reader // reads NC: use it (or Read) for every read
	t  testing.TB
}

// Dial connects to addr over TCP, with a deadline Timeout from now.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(Timeout)))
	return &Conn{NC: nc.(*net.TCPConn), BR: bufio.NewReader(nc), t: t}
}

// Read reads from the connection, after what BR has buffered.
func (c *Conn) Read(p []byte) (int, error) { return c.BR.Read(p) }

// Write writes p to the connection.
func (c *Conn) Write(p []byte) (int, error) { return c.NC.Write(p) }

// Send writes s.
func (c *Conn) Send(s string) {
	c.t.Helper()
	_, err := io.WriteString(c.NC, s)
	require.NoError(c.t, err)
}

// ReadHead reads one response header block, raw, up to and including
// the empty line that ends it; on error it returns what it read so far.
func (c *Conn) ReadHead() (string, error) { return ReadHead(c.BR) }

// ReadHead reads one response header block from br, raw, up to and
// including the empty line that ends it; on error it returns what it read
// so far. It is Conn.ReadHead for code that cannot fail a test, such as a
// goroutine of many clients.
func ReadHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// Head reads one response header block, raw.
func (c *Conn) Head() string {
	c.t.Helper()
	head, err := c.ReadHead()
	require.NoError(c.t, err, "reading a response head, got so far %q", head)
	return head
}

// Response reads one whole response to a request with method, its body
// included (and buffered: it can be read after the connection closes).
// Its Header keeps the Connection field as sent (see ReadResponse).
func (c *Conn) Response(method string) *http.Response {
	c.t.Helper()
	resp, err := ReadResponse(c.BR, method)
	require.NoError(c.t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

// ReadN reads exactly n bytes.
func (c *Conn) ReadN(n int) string {
	c.t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(c.BR, b)
	require.NoError(c.t, err)
	return string(b)
}

// Rest reads until the server closes the connection (EOF).
func (c *Conn) Rest() string {
	c.t.Helper()
	b, err := io.ReadAll(c.BR)
	require.NoError(c.t, err, "reading until EOF, got %q", b)
	return string(b)
}

// CloseWrite half-closes the connection: the server reads EOF.
func (c *Conn) CloseWrite() {
	c.t.Helper()
	require.NoError(c.t, c.NC.CloseWrite())
}

// Close closes the connection.
func (c *Conn) Close() { c.NC.Close() }
