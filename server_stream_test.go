package upgrade

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeStreamWriter is a StreamAccepter over a net.Pipe, standing in for a
// transport other than net/http's HTTP/2, HTTP/3 say.
type pipeStreamWriter struct {
	*httptest.ResponseRecorder
	server, client net.Conn
	mu             sync.Mutex
	accepted       http.Header
}

func newPipeStreamWriter() *pipeStreamWriter {
	s, c := net.Pipe()
	return &pipeStreamWriter{ResponseRecorder: httptest.NewRecorder(), server: s, client: c}
}

func (w *pipeStreamWriter) AcceptStream(h http.Header) (net.Conn, error) {
	w.mu.Lock()
	w.accepted = h.Clone()
	w.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	return w.server, nil
}

// wrappedWriter hides a ResponseWriter behind Unwrap, as middleware does.
type wrappedWriter struct{ http.ResponseWriter }

func (w wrappedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// streamRequest is an extended CONNECT of HTTP/3 for protocol.
func streamRequest(protocol string) *http.Request {
	r := httptest.NewRequest(http.MethodConnect, "https://example.com/chat", nil)
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/3.0", 3, 0
	r.Header[":protocol"] = []string{protocol}
	return r
}

// TestStreamAccepter: an extended CONNECT whose ResponseWriter is a
// StreamAccepter (directly or through Unwrap) is switched through it with
// the same routes and Accepters, and its handler serves the stream; one
// for a protocol not served is refused with 501.
func TestStreamAccepter(t *testing.T) {
	s := &Server{}
	s.Handle("echo/1", accepterFunc{
		accept: func(r *http.Request, h http.Header) error { h.Set("X-Accepted", "yes"); return nil },
		serve:  echo,
	})
	for _, wrap := range []bool{false, true} {
		w := newPipeStreamWriter()
		var rw http.ResponseWriter = w
		if wrap {
			rw = wrappedWriter{w}
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			s.ServeHTTP(rw, streamRequest("echo/1"))
		}()
		_ = w.client.SetDeadline(time.Now().Add(5 * time.Second))
		roundTrip(t, w.client, "over a stream")
		w.client.Close()
		<-served
		assert.Equal(t, http.StatusOK, w.Code)
		w.mu.Lock()
		assert.Equal(t, "yes", w.accepted.Get("X-Accepted"))
		w.mu.Unlock()
	}

	w := newPipeStreamWriter()
	s.ServeHTTP(w, streamRequest("other"))
	assert.Equal(t, http.StatusNotImplemented, w.Code)
	assert.Empty(t, w.Header()["Upgrade"])
	require.Empty(t, s.ActiveConns())
}

// slowAcceptWriter is a StreamAccepter whose AcceptStream waits for
// release, as one does whose peer grants no flow-control credit.
type slowAcceptWriter struct {
	*httptest.ResponseRecorder
	entered, release chan struct{}
	server           net.Conn
}

func (w *slowAcceptWriter) AcceptStream(h http.Header) (net.Conn, error) {
	close(w.entered)
	<-w.release
	return w.server, nil
}

// TestCloseDuringAcceptStream: Server.Close while a stream's 200 is being
// sent neither panics nor lets the stream escape: it is closed as soon as
// it is switched, and its handler returns.
func TestCloseDuringAcceptStream(t *testing.T) {
	s := &Server{}
	s.HandleFunc("echo", echo)
	sc, cc := net.Pipe()
	defer cc.Close()
	w := &slowAcceptWriter{ResponseRecorder: httptest.NewRecorder(), entered: make(chan struct{}), release: make(chan struct{}), server: sc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeHTTP(w, streamRequest("echo"))
	}()
	<-w.entered
	require.NotPanics(t, func() { s.Close() })
	close(w.release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream switched after Close was served on")
	}
	assert.Empty(t, s.ActiveConns())
}
