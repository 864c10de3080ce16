package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/go-upgrade/upgrade/internal/httplist"
)

// A StreamTransport opens the streams of extended CONNECT requests for a
// Dialer whose HTTP3 field it is. The package
// github.com/go-upgrade/upgrade/http3 provides one over HTTP/3 (RFC 9220).
type StreamTransport interface {
	// OpenStream sends req, an extended CONNECT (Method CONNECT, an https
	// URL, its :protocol in req.Header[":protocol"]), waits within ctx
	// for the final response, and returns it with the request's stream
	// as a net.Conn: for a 2xx status, the switched stream, which ctx no
	// longer bounds; for another, a stream whose Read returns the
	// response body. The response's Body is not used. On error nothing is
	// left open.
	OpenStream(ctx context.Context, req *http.Request) (*http.Response, net.Conn, error)
}

// dialStream is Dial over d.HTTP3 to u, parsed by parseTarget into t.
func (d *Dialer) dialStream(ctx context.Context, u *url.URL, t dialTarget, offers []Protocol) (*Conn, error) {
	reqs, err := d.newStreamRequests(ctx, u, t, offers)
	if err != nil {
		return nil, fmt.Errorf("upgrade: dial %s: %w", u.Redacted(), err)
	}
	deadline := d.handshakeDeadline(ctx)
	c, err := d.openStreams(ctx, deadline, reqs, offers)
	if err != nil {
		return nil, dialError(ctx, deadline, u, err)
	}
	c.ctx = context.WithoutCancel(ctx)
	return c, nil
}

// newStreamRequests checks what Dial was given for HTTP/3 and builds an
// extended CONNECT per offer.
func (d *Dialer) newStreamRequests(ctx context.Context, u *url.URL, t dialTarget, offers []Protocol) ([]*http.Request, error) {
	if len(offers) == 0 {
		return nil, errors.New("no protocol offered")
	}
	if len(d.Body) > 0 {
		return nil, errors.New("a request body cannot be sent with an HTTP/3 extended CONNECT")
	}
	for _, o := range offers {
		if r := checkOffer(o); r != "" {
			return nil, fmt.Errorf("invalid offer %s: %s", httplist.Quote(o.String()), r)
		}
		if o.Version != "" {
			// quic-go, like the RFCs, holds :protocol to the token
			// grammar: no peer could carry it.
			return nil, fmt.Errorf("offer %s cannot be asked for over HTTP/3: :protocol is a single token, without a version (RFC 9220, RFC 8441 §4)", httplist.Quote(o.String()))
		}
	}
	return d.extendedConnects(ctx, u, t, offers, 3)
}

// openStreams sends reqs in turn through d.HTTP3 until the server
// accepts one; the last refusal is the error.
func (d *Dialer) openStreams(ctx context.Context, deadline time.Time, reqs []*http.Request, offers []Protocol) (*Conn, error) {
	hctx, cancel := withDeadline(ctx, deadline)
	defer cancel()
	// DialResponse keeps the last refusal's stream open: any other
	// outcome closes it.
	var refused *ResponseError
	for i, req := range reqs {
		resp, sc, err := d.HTTP3.OpenStream(hctx, req)
		refused.closeLive()
		if err != nil {
			return nil, fmt.Errorf("HTTP/3 extended CONNECT: %w", err)
		}
		resp.Status = statusLine(resp.StatusCode)
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/3.0", 3, 0
		resp.Request = req
		c, re, err := d.streamAnswer(hctx, resp, sc, offers[i])
		if re != nil {
			refused = re
			continue
		}
		return c, err
	}
	return nil, refused
}

// streamAnswer takes the answer resp to an extended CONNECT on the stream
// sc: a 2xx that Check accepts switches sc to offer; another status is a
// refusal, whose live response holds sc for DialResponse, or whose error
// holds an excerpt of its body, read within hctx, and sc is closed.
func (d *Dialer) streamAnswer(hctx context.Context, resp *http.Response, sc net.Conn, offer Protocol) (*Conn, *ResponseError, error) {
	if resp.StatusCode/100 != 2 {
		re := &ResponseError{StatusCode: resp.StatusCode, Status: resp.Status, Proto: resp.Proto, Header: resp.Header}
		if d.keepRefusal {
			resp.Body = sc // the rest of the answer; closing it ends the stream
			re.live = resp
			return nil, re, nil
		}
		re.Body = readWithin(hctx, sc)
		sc.Close()
		return nil, re, nil
	}
	// The stream is read through the Conn, never through the response.
	resp.Body, resp.ContentLength = http.NoBody, 0
	if d.Check != nil {
		if err := d.Check(resp); err != nil {
			sc.Close()
			return nil, nil, fmt.Errorf("%s response refused by Check: %w", resp.Status, err)
		}
	}
	if hctx.Err() != nil {
		sc.Close()
		return nil, nil, errors.New("handshake interrupted")
	}
	return &Conn{nc: sc, Protocol: offer, Request: resp.Request, Response: resp}, nil, nil
}

// readWithin reads an excerpt of what sc streams, within hctx.
func readWithin(hctx context.Context, sc net.Conn) []byte {
	if deadline, ok := hctx.Deadline(); ok {
		_ = sc.SetReadDeadline(deadline)
		defer sc.SetReadDeadline(time.Time{}) // its timer would hold sc until then
	}
	stop := context.AfterFunc(hctx, func() { _ = sc.SetReadDeadline(aLongTimeAgo) })
	defer stop()
	return excerpt(sc)
}
