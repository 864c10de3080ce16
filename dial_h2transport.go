package upgrade

import (
	"crypto/tls"
	"maps"
	"slices"
	"sync"
	"time"
)

const (
	defaultHTTP2IdleConnTimeout = 90 * time.Second

	// A server found unable to switch over HTTP/2 gets HTTP/1.1 straight
	// away for http1Memory; at most maxHTTP1Memory servers are
	// remembered.
	http1Memory    = 10 * time.Minute
	maxHTTP1Memory = 1024
)

// An HTTP2Transport holds the HTTP/2 connections on which Dialers whose
// HTTP2 field points to it switch streams with extended CONNECT
// (RFC 8441), one stream per switched connection. It also remembers, for
// a while, the servers that cannot switch over HTTP/2, so that Dialers go
// straight to HTTP/1.1 with them.
//
// Connections are shared between Dials to the same scheme and address,
// through the same proxy, with the same TLSClientConfig (compared by
// pointer) and MaxHeaderBytes; a Dialer's NetDialContext only opens new
// ones. A connection carries as many streams as the server allows
// (SETTINGS_MAX_CONCURRENT_STREAMS); past that, Dials open another. Dials
// that find no connection wait for one being opened.
//
// The zero value is ready to use. An HTTP2Transport is safe for concurrent
// use by multiple goroutines and must not be copied after first use.
// Create one and share it, as with http.Transport; connections stay open
// until they have been idle for IdleConnTimeout, the server closes them
// (a GOAWAY sends later Dials to a new connection while the streams it
// carries finish), or CloseIdleConnections is called.
type HTTP2Transport struct {
	// UnencryptedHTTP2 lets Dialers speak HTTP/2 without TLS, with prior
	// knowledge (RFC 9113 §3.3), to http and ws URLs. Nothing can tell a
	// client whether a cleartext server speaks HTTP/2, so set it only for
	// servers known to: one that does not fails the connection preface,
	// and the Dialer then dials again and upgrades over HTTP/1.1 (and
	// goes straight there for that server for a while). False means
	// cleartext URLs use HTTP/1.1 only.
	UnencryptedHTTP2 bool

	// IdleConnTimeout is how long a connection without streams is kept
	// open. Zero means 90 seconds; a negative value means no limit.
	IdleConnTimeout time.Duration

	mu      sync.Mutex
	conns   map[h2Key][]*h2Conn
	dialing map[h2Key]chan struct{} // closed when the dial is done
	http1   map[h2Key]time.Time     // when to try HTTP/2 again
}

// h2Key identifies the connections Dials may share.
type h2Key struct {
	scheme     string // "https", or "http" for prior knowledge
	addr       string // the address dialed, with any IPv6 zone
	serverName string // the TLS server name asked for, if https
	proxy      string // the proxy URL, "" without one
	tls        *tls.Config
	maxHeader  uint32 // SETTINGS_MAX_HEADER_LIST_SIZE the connection announced
}

// CloseIdleConnections closes the connections that carry no stream. It
// does not interrupt streams: a connection in use is closed once it has
// been idle for IdleConnTimeout.
func (t *HTTP2Transport) CloseIdleConnections() {
	t.mu.Lock()
	var all []*h2Conn
	for _, cs := range t.conns {
		all = append(all, cs...)
	}
	t.mu.Unlock()
	for _, c := range all {
		if c.closeIfIdle() {
			<-c.readDone // readLoop has ended, and removed c
		}
	}
}

// get returns a pooled connection to key with a stream reserved on it;
// or a channel closed when another Dial's dial to key is done; or
// neither, and the caller must dial, then call dialed. useHTTP1 reports a
// server remembered as unable to switch over HTTP/2.
func (t *HTTP2Transport) get(key h2Key) (c *h2Conn, wait <-chan struct{}, useHTTP1 bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.useHTTP1Locked(key) {
		return nil, nil, true
	}
	cs := t.conns[key]
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].reserve() {
			return cs[i], nil, false
		}
	}
	if ch, ok := t.dialing[key]; ok {
		return nil, ch, false
	}
	if t.dialing == nil {
		t.dialing = make(map[h2Key]chan struct{})
	}
	t.dialing[key] = make(chan struct{})
	return nil, nil, false
}

// dialed ends the dial get asked for: c, if not nil, joins the pool;
// useHTTP1 remembers the server cannot switch over HTTP/2.
func (t *HTTP2Transport) dialed(key h2Key, c *h2Conn, useHTTP1 bool) {
	t.mu.Lock()
	ch := t.dialing[key]
	delete(t.dialing, key)
	if c != nil {
		if t.conns == nil {
			t.conns = make(map[h2Key][]*h2Conn)
		}
		t.conns[key] = append(t.conns[key], c)
	}
	if useHTTP1 {
		t.rememberHTTP1Locked(key)
	}
	t.mu.Unlock()
	close(ch)
}

func (t *HTTP2Transport) rememberHTTP1Locked(key h2Key) {
	now := time.Now()
	if t.http1 == nil {
		t.http1 = make(map[h2Key]time.Time)
	}
	if len(t.http1) >= maxHTTP1Memory {
		maps.DeleteFunc(t.http1, func(_ h2Key, until time.Time) bool { return now.After(until) })
	}
	for k := range t.http1 {
		if len(t.http1) < maxHTTP1Memory {
			break
		}
		delete(t.http1, k)
	}
	t.http1[key] = now.Add(http1Memory)
}

func (t *HTTP2Transport) useHTTP1Locked(key h2Key) bool {
	until, ok := t.http1[key]
	if ok && time.Now().After(until) {
		delete(t.http1, key)
		return false
	}
	return ok
}

// remove removes c from the pool.
func (t *HTTP2Transport) remove(c *h2Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := slices.DeleteFunc(t.conns[c.key], func(x *h2Conn) bool { return x == c })
	if len(cs) == 0 {
		delete(t.conns, c.key)
	} else {
		t.conns[c.key] = cs
	}
}
