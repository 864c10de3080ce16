package h2stream

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them. The
// tests of a Conn on a real HTTP/2 stream are the upgrade package's
// (server_h2conn_test.go): they need a Server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitErr waits up to 5 s for an error from ch.
func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no result within 5s", what)
		return nil
	}
}

// slowBody is a request body whose Read blocks until Close, and whose
// Close then waits for release.
type slowBody struct {
	closed, release chan struct{}
}

func (b *slowBody) Read([]byte) (int, error) {
	<-b.closed
	return 0, io.ErrClosedPipe
}

func (b *slowBody) Close() error {
	close(b.closed)
	<-b.release
	return nil
}

// TestH2ConnConcurrentCloses: a Close that starts while another is still
// interrupting a blocked Read returns once the first has finished.
func TestH2ConnConcurrentCloses(t *testing.T) {
	body := &slowBody{closed: make(chan struct{}), release: make(chan struct{})}
	r := httptest.NewRequest("CONNECT", "/", body)
	c := newConn(httptest.NewRecorder(), r)
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.busy == 1
	}, 5*time.Second, time.Millisecond, "the Read is blocked")
	first := make(chan error, 1)
	go func() { first <- c.Close() }()
	assert.ErrorIs(t, waitErr(t, read, "the interrupted Read"), net.ErrClosed)
	second := make(chan error, 1)
	go func() { second <- c.Close() }()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.busy == 1 // only the first Close, still in body.Close
	}, 5*time.Second, time.Millisecond)
	time.Sleep(10 * time.Millisecond) // let the second Close wait
	close(body.release)
	assert.NoError(t, waitErr(t, first, "the first Close"))
	assert.ErrorIs(t, waitErr(t, second, "the second Close"), net.ErrClosed)
}

// TestAddr: an ip:port RemoteAddr is a *net.TCPAddr, anything else an
// address known by its string.
func TestAddr(t *testing.T) {
	a := Addr("192.0.2.1:5000")
	tcp, ok := a.(*net.TCPAddr)
	require.True(t, ok, "%T", a)
	assert.Equal(t, "192.0.2.1:5000", tcp.String())
	assert.Equal(t, "[2001:db8::1]:443", Addr("[2001:db8::1]:443").(*net.TCPAddr).String())

	for _, s := range []string{"", "pipe", "example.com:80"} {
		a := Addr(s)
		_, isTCP := a.(*net.TCPAddr)
		assert.False(t, isTCP, "%q", s)
		assert.Equal(t, s, a.String())
		assert.Equal(t, "tcp", a.Network())
	}
}

// TestIdleMakesNoChannels: a stream served without deadlines makes none
// of the channels deadlines or a waiting Close need, however much it reads
// and writes; its addresses are those of the connection.
func TestIdleMakesNoChannels(t *testing.T) {
	type state struct {
		done, idle, wdone, expired bool
		local                      string
	}
	seen := make(chan state, 1)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil, time.Second)
		if !assert.NoError(t, err) {
			return
		}
		defer c.Close()
		buf := make([]byte, 4)
		for range 2 {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		c.mu.Lock()
		st := state{done: c.done != nil, idle: c.idle != nil, wdone: c.wdone != nil, expired: c.rd.Passed()}
		c.mu.Unlock()
		st.local = c.LocalAddr().String()
		seen <- st
		_, _ = io.Copy(io.Discard, c)
	}))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	ts.Config.Protocols = &p
	ts.Start()
	defer ts.Close()

	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, ts.URL, pr)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, msg := range []string{"ping", "pong"} {
		_, err := io.WriteString(pw, msg)
		require.NoError(t, err)
		got := make([]byte, 4)
		_, err = io.ReadFull(resp.Body, got)
		require.NoError(t, err)
		assert.Equal(t, msg, string(got))
	}
	got := <-seen
	assert.Equal(t, state{local: ts.Listener.Addr().String()}, got)
	pw.Close()
}
