package upgrade

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The frames an h2Conn reads from the server.

func (c *h2Conn) readFrames() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A malformed header block fails its stream only.
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("HTTP/2 stream error from the server: %w", se))
				continue
			}
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			err = c.handleSettings(f)
		case *http2.MetaHeadersFrame:
			err = c.handleHeaders(f)
		case *http2.DataFrame:
			err = c.handleData(f)
		case *http2.WindowUpdateFrame:
			err = c.handleWindowUpdate(f)
		case *http2.RSTStreamFrame:
			err = c.handleReset(f)
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				err = c.write(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
			}
		case *http2.GoAwayFrame:
			c.handleGoAway(f)
		case *http2.PushPromiseFrame:
			// We said SETTINGS_ENABLE_PUSH 0 (RFC 9113 §8.4).
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// PRIORITY, PRIORITY_UPDATE and unknown frames are ignored.
		if err != nil {
			return err
		}
	}
}

func (c *h2Conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	tableSize := int64(-1)
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = s.Val
		case http2.SettingInitialWindowSize:
			// Changes the window of every open stream, which may
			// become negative (RFC 9113 §6.9.2).
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > h2MaxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.wakeWriter()
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			tableSize = int64(s.Val)
		case http2.SettingEnableConnectProtocol:
			if !c.sawSettings {
				c.extConnect = s.Val == 1
			} else if c.extConnect && s.Val == 0 {
				// RFC 8441 §3: it cannot be withdrawn.
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
		}
		return nil
	})
	if !c.sawSettings {
		c.sawSettings = true
		close(c.settingsDone)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.write(func(fr *http2.Framer) error {
		if tableSize >= 0 {
			c.henc.SetMaxDynamicTableSizeLimit(uint32(min(tableSize, 4096)))
		}
		return fr.WriteSettingsAck()
	})
}

// streamLocked returns the open stream id, or nil for a stream that is
// closed. A frame for a stream never opened is a connection error
// (RFC 9113 §5.1), which it returns.
func (c *h2Conn) streamLocked(id uint32) (*h2Stream, error) {
	if s := c.streams[id]; s != nil {
		return s, nil
	}
	if id%2 == 1 && id < c.nextID {
		return nil, nil
	}
	return nil, http2.ConnectionError(http2.ErrCodeProtocol)
}

// failStreamLocked fails s with err and forgets it. Once c.mu is
// released, the caller sends RST_STREAM and, if closeNow, closes the
// connection.
func (c *h2Conn) failStreamLocked(s *h2Stream, err error) (closeNow bool) {
	s.failLocked(err)
	return c.forgetLocked(s)
}

// endStream sends RST_STREAM for a stream failed by failStreamLocked.
func (c *h2Conn) endStream(id uint32, code http2.ErrCode, closeNow bool) {
	c.writeReset(id, code)
	if closeNow {
		c.close()
	}
}

func (c *h2Conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	s, err := c.streamLocked(f.StreamID)
	if s == nil {
		c.mu.Unlock()
		return err
	}
	code, err := s.headersLocked(f, c.key.maxHeader)
	if err != nil {
		closeNow := c.failStreamLocked(s, err)
		c.mu.Unlock()
		c.endStream(s.id, code, closeNow)
		return nil
	}
	closeNow := s.recvEnd && s.sentEnd && c.forgetLocked(s)
	c.mu.Unlock()
	if closeNow {
		c.close()
	}
	return nil
}

func (c *h2Conn) handleData(f *http2.DataFrame) error {
	n := int64(f.Header().Length) // padding included (RFC 9113 §6.9.1)
	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	// The connection is credited at once: each stream's window, credited
	// as its reader reads, bounds what it buffers.
	c.recvWindow -= n
	c.recvUnacked += n
	var connCredit, streamCredit int64
	if c.recvUnacked >= h2ConnWindow/4 {
		connCredit, c.recvUnacked = c.recvUnacked, 0
		c.recvWindow += connCredit
	}
	s, err := c.streamLocked(f.StreamID)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	var code http2.ErrCode
	switch {
	case s == nil:
		// A stream we closed: its DATA only counts for the connection.
	case !s.gotResp:
		code, err = http2.ErrCodeProtocol, errors.New("DATA before the response header")
	case s.recvEnd:
		code, err = http2.ErrCodeStreamClosed, errors.New("DATA after END_STREAM")
	case n > s.recvWindow:
		code, err = http2.ErrCodeFlowControl, errors.New("DATA beyond the stream's flow-control window")
	}
	closeNow := false
	if err != nil {
		closeNow = c.failStreamLocked(s, fmt.Errorf("HTTP/2 stream error: %w", err))
	} else if s != nil {
		s.recvWindow -= n
		s.bufferLocked(f.Data())
		// Padding is credited back as if read at once.
		streamCredit = s.creditLocked(n - int64(len(f.Data())))
		s.recvEnd = f.StreamEnded()
		closeNow = s.recvEnd && s.sentEnd && c.forgetLocked(s)
		s.wakeReader()
	}
	c.mu.Unlock()
	if err != nil {
		c.writeReset(s.id, code)
	}
	if connCredit > 0 || streamCredit > 0 {
		err := c.write(func(fr *http2.Framer) error {
			if connCredit > 0 {
				if err := fr.WriteWindowUpdate(0, uint32(connCredit)); err != nil {
					return err
				}
			}
			if streamCredit > 0 {
				return fr.WriteWindowUpdate(s.id, uint32(streamCredit))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if closeNow {
		c.close()
	}
	return nil
}

func (c *h2Conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	if f.StreamID == 0 {
		c.sendWindow += inc
		overflow := c.sendWindow > h2MaxWindow
		for _, s := range c.streams {
			s.wakeWriter()
		}
		c.mu.Unlock()
		if overflow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		return nil
	}
	s, err := c.streamLocked(f.StreamID)
	if s == nil {
		c.mu.Unlock()
		return err
	}
	s.sendWindow += inc
	if s.sendWindow <= h2MaxWindow {
		s.wakeWriter()
		c.mu.Unlock()
		return nil
	}
	closeNow := c.failStreamLocked(s, errors.New("HTTP/2 stream error: flow-control window overflow"))
	c.mu.Unlock()
	c.endStream(s.id, http2.ErrCodeFlowControl, closeNow)
	return nil
}

func (c *h2Conn) handleReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	s, err := c.streamLocked(f.StreamID)
	if s == nil {
		c.mu.Unlock()
		return err
	}
	err = fmt.Errorf("%w: HTTP/2 stream reset by the server (%v)", syscall.ECONNRESET, f.ErrCode)
	if f.ErrCode == http2.ErrCodeRefusedStream && !s.gotResp {
		// Not processed (RFC 9113 §8.7): it may be sent again.
		err = fmt.Errorf("%w: %w", errStreamUnprocessed, err)
	}
	closeNow := c.failStreamLocked(s, err)
	c.mu.Unlock()
	if closeNow {
		c.close()
	}
	return nil
}

// handleGoAway stops new streams on the connection and fails those the
// server did not process; the others go on until they end.
func (c *h2Conn) handleGoAway(f *http2.GoAwayFrame) {
	err := fmt.Errorf("%w: GOAWAY (%v) with last stream %d", errStreamUnprocessed, f.ErrCode, f.LastStreamID)
	c.mu.Lock()
	c.goAway = true
	closeNow := false
	for id, s := range c.streams {
		if id > f.LastStreamID && c.failStreamLocked(s, err) {
			closeNow = true
		}
	}
	if c.idleLocked() {
		closeNow = true
	}
	c.mu.Unlock()
	c.t.remove(c)
	if closeNow {
		c.close()
	}
}

// resetStream fails stream id with err, and sends RST_STREAM with code.
func (c *h2Conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	closeNow := false
	if s := c.streams[id]; s != nil {
		closeNow = c.failStreamLocked(s, err)
	}
	c.mu.Unlock()
	c.endStream(id, code, closeNow)
}

// writeReset sends RST_STREAM; a write error breaks the connection, which
// readLoop then reports.
func (c *h2Conn) writeReset(id uint32, code http2.ErrCode) {
	_ = c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// h2HeaderSize is the size of a header field as
// SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2).
func h2HeaderSize(f hpack.HeaderField) int64 {
	return int64(len(f.Name) + len(f.Value) + 32)
}
