package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// xnetCheck is what the in-memory check of golang.org/x/net/http2's client
// found: whether it sends extended CONNECT requests, and the error its
// RoundTrip returns when the server did not enable them. That error is
// unexported ("extended connect not supported by peer"): the check
// captures the value so that Dials recognize it with errors.Is, never by
// its text.
//
// The check runs once, on the first Dial that could use HTTP/2, not in an
// init function: programs that never switch over HTTP/2 do not pay for
// it. It takes about a millisecond and uses no socket: a fake server on a
// net.Pipe answers two requests, one with the setting enabled, which must
// go out as an extended CONNECT and succeed, and one without, which must
// fail before anything is sent. If either does not happen — as may be the
// case once x/net's Transport hands requests to net/http's, whose Go 1.26
// Transport rejects ":protocol" (x/net's go1.27 build) — HTTP/2 is not
// used and Dials upgrade over HTTP/1.1.
var xnetCheck = sync.OnceValues(func() (noExtendedConnect error, err error) {
	status, sent, err := probeRoundTrip(http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1})
	switch {
	case err != nil:
		return nil, fmt.Errorf("extended CONNECT to a server that enables it: %w", err)
	case status != http.StatusOK || !sent:
		return nil, fmt.Errorf("extended CONNECT to a server that enables it: status %d, sent as extended CONNECT: %v", status, sent)
	}
	status, sent, err = probeRoundTrip()
	switch {
	case err == nil:
		return nil, fmt.Errorf("extended CONNECT to a server that does not enable it: status %d", status)
	case sent:
		return nil, errors.New("extended CONNECT sent to a server that does not enable it")
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("extended CONNECT to a server that does not enable it: %w", err)
	}
	return err, nil
})

// probeTimeout bounds each exchange of the check; it normally takes well
// under a millisecond.
const probeTimeout = 5 * time.Second

// probeRoundTrip sends an extended CONNECT on an x/net ClientConn to a
// fake server whose first SETTINGS frame holds settings. It returns the
// status of the response, whether the server received the request as an
// extended CONNECT, and RoundTrip's error.
func probeRoundTrip(settings ...http2.Setting) (status int, sent bool, err error) {
	client, server := net.Pipe()
	defer client.Close()
	deadline := time.Now().Add(probeTimeout)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	peer := make(chan bool, 1)
	go func() { peer <- probePeer(server, settings) }()
	defer func() {
		client.Close()
		server.Close()
		sent = <-peer
	}()

	//lint:ignore SA1019 net/http's Transport rejects ":protocol" in Go 1.26: see h2transport.go.
	tr := &http2.Transport{DisableCompression: true, ConnPool: probePool{}}
	//lint:ignore SA1019 net/http's Transport rejects ":protocol" in Go 1.26: see h2transport.go.
	cc, err := tr.NewClientConn(client)
	if err != nil {
		return 0, false, err
	}
	defer cc.Close()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	req := (&http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Scheme: "https", Host: "probe.invalid", Path: "/"},
		Host:   "probe.invalid",
		Header: http.Header{":protocol": {"probe"}},
	}).WithContext(ctx)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return 0, false, err
	}
	resp.Body.Close()
	return resp.StatusCode, false, nil
}

// probePeer is the fake server of probeRoundTrip: it sends settings, then
// answers a HEADERS frame with 200 and reports whether it was an extended
// CONNECT. Its writes go through a goroutine of their own: net.Pipe has no
// buffer, and the client writes its preface and SETTINGS before it starts
// reading.
func probePeer(c net.Conn, settings []http2.Setting) (sawExtendedConnect bool) {
	writes := make(chan func(*http2.Framer) error, 4)
	written := make(chan struct{})
	go func() {
		defer close(written)
		fw := http2.NewFramer(c, nil)
		for w := range writes {
			if w(fw) != nil {
				c.Close()
				for range writes {
				}
				return
			}
		}
	}()
	defer func() {
		close(writes)
		<-written
	}()
	writes <- func(fw *http2.Framer) error { return fw.WriteSettings(settings...) }

	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return false
	}
	fr := http2.NewFramer(nil, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return sawExtendedConnect
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				writes <- func(fw *http2.Framer) error { return fw.WriteSettingsAck() }
			}
		case *http2.MetaHeadersFrame:
			sawExtendedConnect = f.PseudoValue("method") == http.MethodConnect && f.PseudoValue("protocol") == "probe"
			var block bytes.Buffer
			_ = hpack.NewEncoder(&block).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			id := f.StreamID
			writes <- func(fw *http2.Framer) error {
				return fw.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
			}
		}
	}
}

// probePool keeps the check's connection out of any pool.
type probePool struct{}

//lint:ignore SA1019 net/http's Transport rejects ":protocol" in Go 1.26: see h2transport.go.
func (probePool) GetClientConn(*http.Request, string) (*http2.ClientConn, error) {
	return nil, http2.ErrNoCachedConn
}

//lint:ignore SA1019 net/http's Transport rejects ":protocol" in Go 1.26: see h2transport.go.
func (probePool) MarkDead(*http2.ClientConn) {}
