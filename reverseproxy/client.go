package reverseproxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/h2stream"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// clientSide is the client's half of a proxied switch: what the client
// offered and how it is switched once the backend agrees. An HTTP/1.1
// client is switched with a hijack and a 101 (accept11); the stream of an
// extended CONNECT with a 200 (acceptStream), and, for a WebSocket,
// bridged by bridgeWebSocket.
type clientSide struct {
	offers []upgrade.Protocol // allowed offers, in the client's order

	// stream is set for an extended CONNECT: its request has no body to
	// forward, and its stream lives only as long as ServeHTTP runs, so
	// the pair is relayed on the request's goroutine.
	stream bool

	// bridgeWebSocket is set for a WebSocket over an extended CONNECT,
	// which carries no Sec-WebSocket-Key: the proxy supplies one to the
	// HTTP/1.1 backend, checks its Sec-WebSocket-Accept and keeps it
	// from the client.
	bridgeWebSocket bool

	// accept completes the switch on the client's side, telling it the
	// backend switched to the protocols in upgrade (the backend's
	// Upgrade value) with the end-to-end fields h, and returns the
	// client's side of the pair: its bytes read ahead included.
	accept func(w http.ResponseWriter, r *http.Request, upgrade string, h http.Header) (*side, error)
}

// A side is one end of a relayed pair: its connection (TCP, TLS or a
// stream), and the bytes read ahead from it during the handshake, which
// are relayed first. Closing it closes the connection.
type side struct {
	nc    net.Conn
	ahead []byte
}

// Close closes the side's connection.
func (s *side) Close() error { return s.nc.Close() }

// backendSide returns the side of the backend's switched connection: its
// underlying connection, and the bytes that came behind the 101.
func backendSide(bc *upgrade.Conn) *side {
	s := &side{}
	if n := bc.Buffered(); n > 0 {
		s.ahead = make([]byte, n)
		_, _ = io.ReadFull(bc, s.ahead) // the read-ahead bytes: never an error
	}
	s.nc = bc.NetConn()
	return s
}

// accept11 switches an HTTP/1.1 client: it hijacks the connection,
// keeps the bytes the client sent behind its request, and writes the 101
// (preceded by a 100 Continue if the client expects one that net/http
// has not sent) in one write, bounded by the handshake timeout.
func (p *Proxy) accept11(w http.ResponseWriter, r *http.Request, upgrade string, h http.Header) (*side, error) {
	rc := http.NewResponseController(w)
	nc, brw, err := rc.Hijack()
	if err != nil {
		p.logger().Error("upgrade: proxy switching the client", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "upgrade: could not switch protocols", http.StatusInternalServerError)
		return nil, fmt.Errorf("hijacking the connection: %w", err)
	}
	s := &side{nc: nc}
	if n := brw.Reader.Buffered(); n > 0 {
		ahead, _ := brw.Reader.Peek(n)
		s.ahead = append([]byte(nil), ahead...)
	}
	b := make([]byte, 0, 256)
	if expectsContinue(r) && !hasBody(r) {
		b = append(b, "HTTP/1.1 100 Continue\r\n\r\n"...)
	}
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "...)
	b = append(b, upgrade...)
	b = append(b, "\r\nConnection: Upgrade\r\n"...)
	// The Dialer parsed the backend's fields strictly, and switchHeader
	// left out the ones the 101 writes itself.
	b = httplist.AppendFields(b, h)
	b = append(b, "\r\n"...)
	if timeout := p.handshakeTimeout(); timeout > 0 {
		_ = nc.SetWriteDeadline(time.Now().Add(timeout))
	}
	_, err = nc.Write(b)
	if err == nil {
		err = nc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("writing the 101 response: %w", err)
	}
	return s, nil
}

// expectsContinue reports whether r carries "Expect: 100-continue".
func expectsContinue(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue")
}

// acceptStream switches the client's stream of an extended CONNECT: a 200
// with the end-to-end fields h of the backend's 101, after which the
// stream is the client's side. The stream is switched by w's
// upgrade.StreamAccepter if it has one (HTTP/3), or else as a stream of
// net/http's HTTP/2 server, the 200 flushed within the handshake timeout.
func (p *Proxy) acceptStream(w http.ResponseWriter, r *http.Request, _ string, h http.Header) (*side, error) {
	if sa := streamAccepter(w); sa != nil {
		nc, err := sa.AcceptStream(h)
		if err != nil {
			return nil, fmt.Errorf("answering the extended CONNECT: %w", err)
		}
		return &side{nc: nc}, nil
	}
	sc, err := h2stream.Accept(w, r, h, p.handshakeTimeout())
	if err != nil {
		return nil, fmt.Errorf("answering the extended CONNECT: %w", err)
	}
	return &side{nc: sc}, nil
}

// streamAccepter returns w's upgrade.StreamAccepter, or that of a
// ResponseWriter its Unwrap chain returns; nil if none has one.
func streamAccepter(w http.ResponseWriter) upgrade.StreamAccepter {
	for w != nil {
		if sa, ok := w.(upgrade.StreamAccepter); ok {
			return sa
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
	return nil
}
