package upgrade

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-upgrade/upgrade/internal/h2stream"
)

// clientSide is the client's half of a proxied switch: what the client
// offered and how it is switched once the backend agrees. An HTTP/1.1
// client is switched with a hijack and a 101 (accept11); an HTTP/2
// client (RFC 8441 extended CONNECT) with a 200 on its stream
// (acceptStream), and, for a WebSocket, bridged by bridgeWebSocket.
type clientSide struct {
	offers []Protocol // allowed offers, in the client's order

	// stream is set for an HTTP/2 client: its request has no body to
	// forward, and its stream lives only as long as ServeHTTP runs, so
	// the pair is relayed on the request's goroutine.
	stream bool

	// bridgeWebSocket is set for an RFC 8441 WebSocket, which carries no
	// Sec-WebSocket-Key: the proxy supplies one to the HTTP/1.1 backend,
	// checks its Sec-WebSocket-Accept and keeps it from the client.
	bridgeWebSocket bool

	// accept completes the switch on the client's side, telling it the
	// backend switched to the protocols in upgrade (the backend's
	// Upgrade value) with the end-to-end fields h, and returns the
	// client's Conn: its bytes read ahead included.
	accept func(w http.ResponseWriter, r *http.Request, upgrade string, h http.Header) (*Conn, error)
}

// accept11 switches an HTTP/1.1 client: it hijacks the connection,
// keeps the bytes the client sent behind its request, and writes the 101
// (preceded by a 100 Continue if the client expects one that net/http
// has not sent) in one write, bounded by the handshake timeout.
func (p *Proxy) accept11(w http.ResponseWriter, r *http.Request, upgrade string, h http.Header) (*Conn, error) {
	rc := http.NewResponseController(w)
	nc, brw, err := rc.Hijack()
	if err != nil {
		p.logger().Error("upgrade: proxy switching the client", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "upgrade: could not switch protocols", http.StatusInternalServerError)
		return nil, fmt.Errorf("hijacking the connection: %w", err)
	}
	c := &Conn{nc: nc, Request: r}
	if n := brw.Reader.Buffered(); n > 0 {
		ahead, _ := brw.Reader.Peek(n)
		c.rbuf = append([]byte(nil), ahead...)
	}
	b := make([]byte, 0, 256)
	if expectsContinue(r) && !hasBody(r) {
		b = append(b, "HTTP/1.1 100 Continue\r\n\r\n"...)
	}
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "...)
	b = append(b, upgrade...)
	b = append(b, "\r\nConnection: Upgrade\r\n"...)
	// Dial parsed the backend's fields strictly, and switchHeader left
	// out the ones the 101 writes itself.
	b = appendSortedFields(b, h)
	b = append(b, "\r\n"...)
	if timeout := p.dialer0().handshakeTimeout(); timeout > 0 {
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
	return c, nil
}

// backendFailed answers a request whose backend did not switch: the
// backend's own answer is relayed whole (relayAnswer); a failure to reach
// it, or an invalid 101, goes to ErrorHandler and is logged as an error.
func (p *Proxy) backendFailed(w http.ResponseWriter, r *http.Request, err error, rec *proxyLog) {
	var re *ResponseError
	if errors.As(err, &re) && re.live != nil {
		p.relayAnswer(w, r, re.live, rec)
		return
	}
	how, code := backendFailure(err)
	p.logger().Warn("upgrade: proxy: "+how, "remote", r.RemoteAddr, "backend", rec.backend, "err", err)
	defer rec.end(how, "status", code, "err", err)
	if r.ProtoMajor == 1 {
		// On HTTP/2, net/http would take "close" as a reason to shut
		// down the whole connection, every other stream with it.
		w.Header()["Connection"] = []string{"close"}
	}
	if p.ErrorHandler != nil {
		p.ErrorHandler(w, r, err)
		return
	}
	p.refuse(w, r, code, http.StatusText(code))
}

// acceptStream switches an HTTP/2 client's stream (RFC 8441): a 200 with
// the end-to-end fields h of the backend's 101, flushed within the
// handshake timeout, after which the stream is the client's Conn.
func (p *Proxy) acceptStream(w http.ResponseWriter, r *http.Request, _ string, h http.Header) (*Conn, error) {
	sc, err := h2stream.Accept(w, r, h, p.dialer0().handshakeTimeout())
	if err != nil {
		return nil, fmt.Errorf("answering the extended CONNECT: %w", err)
	}
	return &Conn{nc: sc, Request: r}, nil
}
