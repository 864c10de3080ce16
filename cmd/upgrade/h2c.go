package main

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-upgrade/upgrade"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cSettings are the SETTINGS dial sends, in the HTTP2-Settings field of
// the upgrade request and again after the connection preface: no server
// push; everything else at its default.
var h2cSettings = []http2.Setting{
	{ID: http2.SettingEnablePush, Val: 0},
}

// maxResponseHeaderList bounds the decoded header list of the response.
const maxResponseHeaderList = 1 << 20

// h2cSettingsHeader returns the HTTP2-Settings field value: the base64url
// encoding, without padding, of a SETTINGS frame payload (RFC 7540
// §3.2.1).
func h2cSettingsHeader() string {
	b := make([]byte, 0, 6*len(h2cSettings))
	for _, s := range h2cSettings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// h2cExchange completes an h2c upgrade on c as the client: it sends the
// connection preface and SETTINGS, reads the response to the upgrade
// request, which the server sends on stream 1 (RFC 7540 §3.2), and writes
// it to w: the header fields (":status: 200" first) one per line, an empty
// line, then the body. Interim 1xx responses and trailers are skipped.
// Once stream 1 has ended it sends GOAWAY. A zero deadline means no bound.
//
// A standard HTTP/2 client connection cannot be used here: it would open
// stream 1 itself, while the server already answers the upgrade request on
// it.
func h2cExchange(c *upgrade.Conn, w io.Writer, deadline time.Time) error {
	if !deadline.IsZero() {
		if err := c.SetDeadline(deadline); err != nil {
			return err
		}
	}
	bw := bufio.NewWriter(c)
	// Read from c, not c.NetConn(): the server's SETTINGS may have arrived
	// with the 101.
	fr := http2.NewFramer(bw, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = maxResponseHeaderList
	if _, err := bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	if err := fr.WriteSettings(h2cSettings...); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing the HTTP/2 preface: %w", err)
	}

	st := h2cStream{fr: fr, w: w}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("h2c: reading the response on stream 1: %w", err)
		}
		ended, err := st.handle(f)
		if err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("h2c: writing to the connection: %w", err)
		}
		if ended {
			break
		}
	}
	// Stream 1 is complete: tell the server we are done. We accepted no
	// stream from it, so the last stream ID is 0.
	if err := fr.WriteGoAway(0, http2.ErrCodeNo, nil); err == nil {
		_ = bw.Flush()
	}
	return nil
}

// h2cStream follows stream 1, the upgrade request's response, through
// the frames the server sends.
type h2cStream struct {
	fr          *http2.Framer
	w           io.Writer // where the response goes
	headersDone bool      // the final response's header block was written
}

// handle answers one frame as a client must (SETTINGS and PING
// acknowledged, flow-control credit given back) and writes what belongs
// to stream 1's response to st.w. It reports whether the stream ended.
func (st *h2cStream) handle(f http2.Frame) (ended bool, err error) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			err = st.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			err = st.fr.WritePing(true, f.Data)
		}
	case *http2.MetaHeadersFrame:
		if f.StreamID != 1 {
			return false, nil
		}
		if !st.headersDone {
			if strings.HasPrefix(f.PseudoValue("status"), "1") {
				return false, nil // interim response
			}
			if err := writeHeaderBlock(st.w, f.Fields); err != nil {
				return false, err
			}
			st.headersDone = true
		}
		return f.StreamEnded(), nil
	case *http2.DataFrame:
		if n := f.Length; n > 0 {
			// Give back the flow-control credit, padding included.
			if err = st.fr.WriteWindowUpdate(0, n); err == nil && !f.StreamEnded() {
				err = st.fr.WriteWindowUpdate(f.StreamID, n)
			}
		}
		if f.StreamID == 1 {
			if _, werr := st.w.Write(f.Data()); werr != nil {
				return false, werr
			}
			ended = f.StreamEnded()
		}
	case *http2.RSTStreamFrame:
		if f.StreamID == 1 {
			return false, fmt.Errorf("h2c: server reset stream 1: %v", f.ErrCode)
		}
	case *http2.GoAwayFrame:
		if f.LastStreamID < 1 || f.ErrCode != http2.ErrCodeNo {
			return false, fmt.Errorf("h2c: server sent GOAWAY (%v, last stream %d) before the response ended: %q",
				f.ErrCode, f.LastStreamID, f.DebugData())
		}
	}
	if err != nil {
		return false, fmt.Errorf("h2c: writing to the connection: %w", err)
	}
	return ended, nil
}

// writeHeaderBlock writes a response's header fields, pseudo-fields
// first as HTTP/2 orders them, then an empty line. Names and values pass
// through printable: HPACK lets a value carry C1 controls and
// bidirectional overrides as UTF-8.
func writeHeaderBlock(w io.Writer, fields []hpack.HeaderField) error {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(printable(f.Name))
		b.WriteString(": ")
		b.WriteString(printable(f.Value))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}
