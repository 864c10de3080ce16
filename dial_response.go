package upgrade

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// ErrInvalidSwitch is wrapped by the error Dial returns when the server
// answered 101 Switching Protocols but the response does not complete a
// valid switch: a malformed status line or header field, HTTP/1.0, an
// Upgrade field missing, malformed or naming a protocol that was not
// offered, or a Connection field without the "upgrade" option
// (RFC 9110 §7.8).
var ErrInvalidSwitch = errors.New("upgrade: invalid 101 Switching Protocols response")

// ResponseError is the error Dial returns when the server (or, with Proxy
// set, a proxy asked to CONNECT) answers with a final status other than
// the expected one: anything but 101 Switching Protocols from the server
// over HTTP/1.1, anything but 2xx from the server to an HTTP/2 or HTTP/3
// extended CONNECT or from the proxy. Use errors.As to get it.
type ResponseError struct {
	// StatusCode is the response's status code, e.g. 426; Status the
	// whole status, e.g. "426 Upgrade Required".
	StatusCode int
	Status     string

	// Proto is the protocol version of the response: "HTTP/1.1" (or
	// another HTTP/1.x), or "HTTP/2.0" or "HTTP/3.0" for a refused
	// extended CONNECT.
	Proto string

	// Header is the response header.
	Header http.Header

	// Body is the start of the response body, at most 4 KiB, read within
	// the handshake's bounds; possibly empty or cut short.
	Body []byte

	// Upgrade lists the protocols the server advertised in its Upgrade
	// field (a 426 must carry one), in its order. It is parsed leniently:
	// malformed elements are skipped, and at most 64 are kept. It is
	// always empty over HTTP/2 and HTTP/3, which have no Upgrade field.
	Upgrade []Protocol

	// Proxy reports whether the response came from the proxy, refusing
	// the CONNECT request, rather than from the server.
	Proxy bool

	live *http.Response // with its body, for DialResponse
}

// closeLive closes the body of e's live response, if e has one.
func (e *ResponseError) closeLive() {
	if e != nil && e.live != nil {
		e.live.Body.Close()
	}
}

// Error names the status and the protocols the server advertised.
func (e *ResponseError) Error() string {
	if e.Proxy {
		return "upgrade: proxy answered CONNECT with " + strconv.Quote(e.Status)
	}
	switch e.Proto {
	case "HTTP/2.0", "HTTP/3.0":
		return "upgrade: server answered " + strconv.Quote(e.Status) + " to an " + e.Proto[:6] + " extended CONNECT"
	}
	s := "upgrade: server answered " + strconv.Quote(e.Status) + " instead of 101 Switching Protocols"
	if len(e.Upgrade) > 0 {
		s += "; it advertises Upgrade: " + formatProtocols(e.Upgrade)
	}
	return s
}

// formatProtocols formats ps as an Upgrade field value.
func formatProtocols(ps []Protocol) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

const (
	maxInterimResponses = 8       // interim 1xx responses skipped before a final one
	maxErrorBody        = 4 << 10 // bytes of a refusal's body in a ResponseError
	maxAdvertised       = 64      // protocols kept from a refusal's Upgrade field
)

// errLimit is returned by a limitReader past its bound.
var errLimit = errors.New("read limit reached")

// limitReader reads at most n more bytes from r, then fails with errLimit:
// unlike io.LimitedReader, it tells its bound from the end of r.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// responseReadError names a read failure: a connection that ended early
// is io.ErrUnexpectedEOF, a limitReader's bound ErrHeaderTooLarge.
func responseReadError(err error) error {
	switch {
	case errors.Is(err, errLimit):
		return fmt.Errorf("response header block too large: %w", ErrHeaderTooLarge)
	case err == io.EOF:
		return fmt.Errorf("connection closed before the response was complete: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// readSwitch reads responses from br until a final one, skipping interim
// 1xx responses. It returns a valid 101 and the offer it selects, another
// final response (body unread) with errNotSwitched, or another error.
func readSwitch(br *bufio.Reader, req *http.Request, offers []Protocol) (*http.Response, Protocol, error) {
	for interim := 0; ; interim++ {
		// A 101 is parsed here: http.ReadResponse would reject (or
		// interpret) Content-Length and Transfer-Encoding fields, which a
		// 101 cannot have and a client must ignore (RFC 9112 §6.3).
		head, err := br.Peek(len("HTTP/1.1 101"))
		if err != nil {
			return nil, Protocol{}, fmt.Errorf("reading the response: %w", responseReadError(err))
		}
		if is101(head) {
			return read101(br, req, offers)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, Protocol{}, fmt.Errorf("reading the response: %w", responseReadError(err))
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, Protocol{}, invalidSwitch("malformed status line")
		case resp.StatusCode/100 == 1:
			if interim >= maxInterimResponses {
				return nil, Protocol{}, fmt.Errorf("more than %d interim responses", maxInterimResponses)
			}
			continue
		}
		return resp, Protocol{}, errNotSwitched
	}
}

// errNotSwitched is readSwitch's error for a final response other than
// 101, which it returns with its body unread.
var errNotSwitched = errors.New("upgrade: final response other than 101")

// is101 reports whether head, the first bytes of a response, is
// "HTTP/1.x 101".
func is101(head []byte) bool {
	return len(head) >= 12 && string(head[:7]) == "HTTP/1." && '0' <= head[7] && head[7] <= '9' &&
		head[8] == ' ' && string(head[9:12]) == "101"
}

// invalidSwitchError is an invalid 101 response, matching ErrInvalidSwitch.
type invalidSwitchError struct{ detail string }

func (e *invalidSwitchError) Error() string {
	return "invalid 101 Switching Protocols response: " + e.detail
}

func (e *invalidSwitchError) Is(target error) bool { return target == ErrInvalidSwitch }

func invalidSwitch(detail string) error { return &invalidSwitchError{detail: detail} }

// read101 reads a response whose status line starts "HTTP/1.x 101" and
// checks it completes the switch: HTTP/1.1 or a later 1.x, an Upgrade
// field whose protocols were all offered, the first selecting the Conn's
// protocol, and Connection carrying "upgrade". The header block ends the
// response; br keeps what follows it.
func read101(br *bufio.Reader, req *http.Request, offers []Protocol) (*http.Response, Protocol, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, Protocol{}, invalidSwitch("status line too long")
	}
	if err != nil {
		return nil, Protocol{}, fmt.Errorf("reading the response: %w", responseReadError(err))
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if !is101(line) {
		return nil, Protocol{}, invalidSwitch("malformed status line")
	}
	reason, hasReason := bytes.CutPrefix(line[12:], []byte(" "))
	switch {
	case len(line) > 12 && !hasReason:
		return nil, Protocol{}, invalidSwitch("malformed status line")
	case line[7] == '0':
		// RFC 9110 §7.8: an HTTP/1.0 message cannot switch.
		return nil, Protocol{}, invalidSwitch("HTTP/1.0 response")
	case !httpguts.ValidHeaderFieldValue(string(reason)):
		return nil, Protocol{}, invalidSwitch("control byte in reason phrase")
	}
	status := "101"
	if len(reason) > 0 {
		status += " " + string(reason)
	}
	resp := &http.Response{
		Status:     status,
		StatusCode: http.StatusSwitchingProtocols,
		Proto:      string(line[:8]),
		ProtoMajor: 1,
		ProtoMinor: int(line[7] - '0'),
		Body:       http.NoBody,
		Request:    req,
	}
	if resp.Header, err = readHeader(br); err != nil {
		return nil, Protocol{}, err
	}
	got, err := appendProtocols(nil, resp.Header["Upgrade"], Limits{})
	if err != nil {
		return nil, Protocol{}, invalidSwitch(err.Error())
	}
	if len(got) == 0 {
		return nil, Protocol{}, invalidSwitch("no Upgrade field")
	}
	var chosen Protocol
	for i, p := range got {
		o, ok := matchOffer(offers, p)
		if !ok {
			return nil, Protocol{}, invalidSwitch("Upgrade names " + strconv.Quote(p.String()) + ", which was not offered")
		}
		if i == 0 {
			chosen = o
		}
	}
	if !hasConnectionOption(resp.Header, "upgrade") {
		return nil, Protocol{}, invalidSwitch("Connection field lacks the upgrade option")
	}
	return resp, chosen, nil
}

// readHeader reads a header block up to and including its empty line.
// Field names must be tokens directly followed by ":" (RFC 9112 §5.1),
// values free of control bytes other than HTAB. Obsolete line folding is
// unfolded as RFC 9112 §5.2 requires of a user agent: a line starting with
// SP or HTAB continues the previous field's value, joined to it by one SP,
// the OWS around the fold trimmed; such a line before the first field is
// malformed. Lines end in CRLF or LF; a block that ends without its empty
// line is io.ErrUnexpectedEOF.
func readHeader(br *bufio.Reader) (http.Header, error) {
	h := make(http.Header)
	// A field is stored once the next line shows it is not folded, so
	// that a value folded many times is built in one buffer.
	var (
		key   string // "" before the first field
		value []byte
	)
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, fmt.Errorf("reading the 101 response header: %w", err)
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if key == "" {
				return nil, invalidSwitch("line folding before the first header field")
			}
			cont := bytes.Trim(line, " \t")
			if !httpguts.ValidHeaderFieldValue(string(cont)) {
				return nil, invalidSwitch("invalid value in folded header line " + httplist.Quote(string(line)))
			}
			if len(cont) > 0 && len(value) > 0 {
				value = append(value, ' ')
			}
			value = append(value, cont...)
			continue
		}
		if key != "" {
			h[key] = append(h[key], string(value))
		}
		if len(line) == 0 {
			return h, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !httpguts.ValidHeaderFieldName(string(line[:colon])) {
			return nil, invalidSwitch("malformed header line " + httplist.Quote(string(line)))
		}
		v := bytes.Trim(line[colon+1:], " \t")
		if !httpguts.ValidHeaderFieldValue(string(v)) {
			return nil, invalidSwitch("invalid value in header line " + httplist.Quote(string(line)))
		}
		key = textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
		value = append(value[:0], v...)
	}
}

// readLine returns the next line from br without its CRLF or LF. The
// slice is valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A long line: gather it (the limitReader under br bounds it).
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		return nil, responseReadError(err)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// matchOffer returns the offer p names: the name compared ASCII
// case-insensitively, the version exactly.
func matchOffer(offers []Protocol, p Protocol) (Protocol, bool) {
	for _, o := range offers {
		if ascii.EqualFold(o.Name, p.Name) && o.Version == p.Version {
			return o, true
		}
	}
	return Protocol{}, false
}

// newResponseError builds the error for a final response other than the
// one expected, its Body left unread.
func newResponseError(resp *http.Response) *ResponseError {
	return &ResponseError{
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Proto:      resp.Proto,
		Header:     resp.Header,
		Upgrade:    parseAdvertised(resp.Header["Upgrade"]),
	}
}

// excerpt reads the start of a refusal's body for a ResponseError; the
// caller bounds the reading. Errors only cut it short.
func excerpt(body io.Reader) []byte {
	if body == nil || body == http.NoBody {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	return b
}

// parseAdvertised parses the Upgrade field of a refusal leniently:
// well-formed elements are kept, others skipped.
func parseAdvertised(values []string) []Protocol {
	var out []Protocol
	for e := range httplist.Elements(values) {
		if len(out) == maxAdvertised {
			break
		}
		if p, reason := parseElement(e); reason == "" {
			out = append(out, p)
		}
	}
	return out
}
