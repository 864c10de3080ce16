package upgrade

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeTransport is a StreamTransport that serves each extended CONNECT in
// process with h over a net.Pipe, presenting it to h as an HTTP/3 server
// would: a stand-in for an HTTP/3 client and server.
type pipeTransport struct {
	h  http.Handler
	wg sync.WaitGroup

	mu   sync.Mutex
	seen []*http.Request // the requests sent, in order
}

func (p *pipeTransport) requests() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.seen...)
}

func (p *pipeTransport) OpenStream(ctx context.Context, req *http.Request) (*http.Response, net.Conn, error) {
	p.mu.Lock()
	p.seen = append(p.seen, req)
	p.mu.Unlock()
	sr := httptest.NewRequest(http.MethodConnect, req.URL.String(), nil)
	sr.Proto, sr.ProtoMajor, sr.ProtoMinor = "HTTP/3.0", 3, 0
	sr.Host = req.Host
	sr.Header = req.Header.Clone()
	w := &answerWriter{header: make(http.Header), answered: make(chan struct{})}
	w.server, w.client = net.Pipe()
	p.wg.Go(func() {
		p.h.ServeHTTP(w, sr)
		w.finish()
	})
	select {
	case <-w.answered:
	case <-ctx.Done():
		w.client.Close()
		return nil, nil, ctx.Err()
	}
	return &http.Response{StatusCode: w.status, Header: w.header.Clone(), Body: http.NoBody}, w.client, nil
}

// answerWriter is the StreamAccepter of a pipeTransport's request: a 2xx
// hands the pipe to the handler; another status has its body written on
// the pipe once the handler returns.
type answerWriter struct {
	header         http.Header
	server, client net.Conn
	answered       chan struct{}
	once           sync.Once
	status         int
	body           []byte
	accepted       bool
}

func (w *answerWriter) Header() http.Header { return w.header }

func (w *answerWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		close(w.answered)
	})
}

func (w *answerWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

func (w *answerWriter) AcceptStream(h http.Header) (net.Conn, error) {
	for k, vs := range h {
		w.header[k] = vs
	}
	w.accepted = true
	w.WriteHeader(http.StatusOK)
	return w.server, nil
}

// finish sends a refusal's body once the handler has returned.
func (w *answerWriter) finish() {
	w.WriteHeader(http.StatusOK)
	if w.accepted {
		return
	}
	_, _ = w.server.Write(w.body)
	w.server.Close()
}

// TestDialHTTP3OffersInOrder: with HTTP3 set, an https URL is dialed as an
// extended CONNECT per offer through the StreamTransport, in order, until
// one is answered 2xx; Prepare sees each request (ProtoMajor 3), Check the
// 2xx response, and the Conn is the stream.
func TestDialHTTP3OffersInOrder(t *testing.T) {
	s := echoServer("chat")
	pt := &pipeTransport{h: s}
	var prepared []int
	var checked []*http.Response
	d := &Dialer{
		HTTP3:   pt,
		Header:  http.Header{"X-Test": {"1"}, "Connection": {"close"}, "Upgrade": {"x"}},
		Prepare: func(r *http.Request) error { prepared = append(prepared, r.ProtoMajor); return nil },
		Check:   func(r *http.Response) error { checked = append(checked, r); return nil },
	}
	c, err := d.Dial(context.Background(), "wss://example.com/room?x=1", Protocol{Name: "nosuch"}, Protocol{Name: "chat"})
	require.NoError(t, err)
	assert.Equal(t, Protocol{Name: "chat"}, c.Protocol)
	assert.Equal(t, []int{3, 3}, prepared)
	require.Len(t, checked, 1)
	assert.Same(t, c.Response, checked[0])
	assert.Equal(t, http.MethodConnect, c.Request.Method)
	assert.Equal(t, "HTTP/3.0", c.Request.Proto)
	assert.Equal(t, 3, c.Request.ProtoMajor)
	assert.Equal(t, []string{"chat"}, c.Request.Header[":protocol"])
	assert.Equal(t, "https", c.Request.URL.Scheme)
	assert.Equal(t, "/room?x=1", c.Request.URL.RequestURI())
	assert.Equal(t, "HTTP/3.0", c.Response.Proto)
	assert.Equal(t, 3, c.Response.ProtoMajor)
	assert.Equal(t, "200 OK", c.Response.Status)
	assert.Same(t, c.Request, c.Response.Request)

	reqs := pt.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, []string{"nosuch"}, reqs[0].Header[":protocol"])
	for _, r := range reqs {
		assert.Equal(t, "1", r.Header.Get("X-Test"))
		assert.Empty(t, r.Header["Connection"], "connection-specific fields are not sent")
		assert.Empty(t, r.Header["Upgrade"])
	}

	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	roundTrip(t, c, "over HTTP/3")
	require.NoError(t, c.Close())
	pt.wg.Wait()
	closeAndWait(t, s)
}

// TestDialHTTP3Refused: when the server refuses every offer, Dial returns
// the last refusal, a *ResponseError of HTTP/3 with an excerpt of its body,
// and no stream stays open.
func TestDialHTTP3Refused(t *testing.T) {
	s := echoServer("chat")
	pt := &pipeTransport{h: s}
	d := &Dialer{HTTP3: pt}
	c, err := d.Dial(context.Background(), "https://example.com/", Protocol{Name: "one"}, Protocol{Name: "two"})
	require.Error(t, err)
	assert.Nil(t, c)
	var re *ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusNotImplemented, re.StatusCode)
	assert.Equal(t, "501 Not Implemented", re.Status)
	assert.Equal(t, "HTTP/3.0", re.Proto)
	assert.Contains(t, string(re.Body), "two")
	assert.Empty(t, re.Upgrade)
	assert.Equal(t, `upgrade: server answered "501 Not Implemented" to an HTTP/3 extended CONNECT`, err.Error())
	require.Len(t, pt.requests(), 2)
	pt.wg.Wait()
	closeAndWait(t, s)
}

// TestDialResponseHTTP3: DialResponse hands over the last refusal's
// stream as the response body.
func TestDialResponseHTTP3(t *testing.T) {
	s := echoServer("chat")
	pt := &pipeTransport{h: s}
	d := &Dialer{HTTP3: pt}
	c, resp, err := d.DialResponse(context.Background(), "https://example.com/", Protocol{Name: "one"}, Protocol{Name: "two"})
	require.NoError(t, err)
	require.Nil(t, c)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusNotImplemented, resp.StatusCode)
	assert.Equal(t, "HTTP/3.0", resp.Proto)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), "two")
	require.NoError(t, resp.Body.Close())
	pt.wg.Wait()
	closeAndWait(t, s)
}

// TestDialHTTP3RefusedBeforeSending: what HTTP/3 cannot carry fails the
// Dial before anything is sent: an offer with a version (quic-go and the
// RFCs hold :protocol to a token), a body, or no offer.
func TestDialHTTP3RefusedBeforeSending(t *testing.T) {
	pt := &pipeTransport{h: http.NotFoundHandler()}
	prepared := 0
	d := &Dialer{HTTP3: pt, Prepare: func(*http.Request) error { prepared++; return nil }}
	_, err := d.Dial(context.Background(), "https://example.com/", Protocol{Name: "websocket"}, Protocol{Name: "echo", Version: "1"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `offer "echo/1" cannot be asked for over HTTP/3`)

	_, err = d.Dial(context.Background(), "https://example.com/")
	assert.ErrorContains(t, err, "no protocol offered")

	d.Body = []byte("x")
	_, err = d.Dial(context.Background(), "https://example.com/", Protocol{Name: "websocket"})
	assert.ErrorContains(t, err, "a request body cannot be sent with an HTTP/3 extended CONNECT")

	d.Body = nil
	d.Header = http.Header{"Content-Length": {"3"}}
	_, err = d.Dial(context.Background(), "https://example.com/", Protocol{Name: "websocket"})
	assert.ErrorContains(t, err, "header field Content-Length cannot be sent in an HTTP/3 extended CONNECT")

	assert.Empty(t, pt.requests())
	assert.Equal(t, 1, prepared, "only the fields, checked as Prepare left them, get as far as Prepare")
}

// TestDialHTTP3CleartextUsesHTTP1: HTTP3 applies to https and wss URLs
// only; an http URL upgrades over HTTP/1.1 as without it.
func TestDialHTTP3CleartextUsesHTTP1(t *testing.T) {
	s := echoServer("chat")
	srv := serve(t, s, s)
	pt := &pipeTransport{h: s}
	d := &Dialer{HTTP3: pt, Proxy: noProxy}
	c, err := d.Dial(context.Background(), "http://"+srv.addr+"/", Protocol{Name: "chat"})
	require.NoError(t, err)
	assert.Equal(t, 1, c.Request.ProtoMajor)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	roundTrip(t, c, "over HTTP/1.1")
	require.NoError(t, c.Close())
	assert.Empty(t, pt.requests())
}

// TestDialHTTP3CheckRefuses: a Check error closes the stream and is the
// Dial's error; no other offer is tried.
func TestDialHTTP3CheckRefuses(t *testing.T) {
	s := echoServer("chat", "other")
	pt := &pipeTransport{h: s}
	errNope := errors.New("nope")
	d := &Dialer{HTTP3: pt, Check: func(*http.Response) error { return errNope }}
	_, err := d.Dial(context.Background(), "https://example.com/", Protocol{Name: "chat"}, Protocol{Name: "other"})
	require.ErrorIs(t, err, errNope)
	assert.Contains(t, err.Error(), "200 OK response refused by Check")
	assert.Len(t, pt.requests(), 1)
	pt.wg.Wait() // the handler saw the stream closed
	closeAndWait(t, s)
}

// blockingTransport answers nothing until its context ends.
type blockingTransport struct{ err error }

func (b blockingTransport) OpenStream(ctx context.Context, req *http.Request) (*http.Response, net.Conn, error) {
	if b.err != nil {
		return nil, nil, b.err
	}
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

// TestDialHTTP3Bounds: HandshakeTimeout and the context bound the
// transport's wait, with the same errors as over HTTP/1.1; a transport's
// own error is wrapped.
func TestDialHTTP3Bounds(t *testing.T) {
	d := &Dialer{HTTP3: blockingTransport{}, HandshakeTimeout: 50 * time.Millisecond}
	_, err := d.Dial(context.Background(), "https://example.com/", Protocol{Name: "chat"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "handshake timeout")

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	d.HandshakeTimeout = -1
	_, err = d.Dial(ctx, "https://example.com/", Protocol{Name: "chat"})
	require.ErrorIs(t, err, context.Canceled)

	errDown := errors.New("no route")
	d = &Dialer{HTTP3: blockingTransport{err: errDown}}
	_, err = d.Dial(context.Background(), "https://example.com/", Protocol{Name: "chat"})
	require.ErrorIs(t, err, errDown)
	assert.Equal(t, "upgrade: dial https://example.com/: HTTP/3 extended CONNECT: no route", err.Error())
}
