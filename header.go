package upgrade

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// Protocol is one element of an Upgrade header field: a protocol name and an
// optional version (RFC 9110 §7.8). The zero Version means none was given.
type Protocol struct {
	Name    string // a token, e.g. "websocket"
	Version string // a token or "", e.g. "1" in "echo/1"
}

// String formats p as it appears in an Upgrade header: "name" or
// "name/version".
func (p Protocol) String() string {
	if p.Version == "" {
		return p.Name
	}
	return p.Name + "/" + p.Version
}

const (
	defaultMaxProtocols    = 16
	defaultMaxUpgradeBytes = 1024
)

// Limits bounds what the Upgrade header parser accepts. A zero field means
// its default.
type Limits struct {
	// MaxProtocols caps the number of protocols offered across all
	// Upgrade lines. Zero means 16.
	MaxProtocols int
	// MaxBytes caps the total length of all Upgrade lines. Zero means
	// 1024.
	MaxBytes int
}

// ErrHeaderTooLarge is wrapped by the error of a header over a bound:
// an Upgrade list over Limits (a server answers 431 Request Header Fields
// Too Large; the list is never truncated), or response headers over
// Dialer.MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("upgrade: header exceeds limit")

// HeaderError reports a malformed or oversized header field. A server
// answers a malformed Upgrade with 400 Bad Request and never switches.
type HeaderError struct {
	Field   string // header field name, e.g. "Upgrade"; "" for a lone protocol
	Element string // the offending list element as received; Error shows at most 64 bytes of it
	Reason  string // what is wrong with it
	Err     error  // underlying cause, e.g. ErrHeaderTooLarge; may be nil
}

// Error describes the offending field and element.
func (e *HeaderError) Error() string {
	s := "upgrade: malformed " + e.Field + " header"
	switch {
	case e.Field == "":
		s = "upgrade: invalid protocol"
	case e.Err != nil:
		s = "upgrade: " + e.Field + " header too large"
	}
	if e.Element != "" {
		s += ": element " + httplist.Quote(e.Element)
	}
	return s + ": " + e.Reason
}

// Unwrap returns the underlying cause.
func (e *HeaderError) Unwrap() error { return e.Err }

// ParseProtocols parses the Upgrade header lines in values, in order, into
// the protocols offered, in the client's order of preference, within the
// default Limits.
//
// Each line is an RFC 9110 §5.6.1 list of elements `token ["/" token]`: empty
// elements are skipped and SP and HTAB around elements trimmed. Anything
// else — whitespace inside an element, a quoted string, a second "/", an
// empty name or version, a separator such as ";" or "@", a control byte or
// a byte of 0x80 or above — makes the whole header malformed: the error is
// a *HeaderError naming the element. Exceeding a bound is a *HeaderError
// wrapping ErrHeaderTooLarge. Duplicates are kept.
func ParseProtocols(values []string) ([]Protocol, error) {
	ps, err := appendProtocols(nil, values, Limits{})
	if err != nil {
		return nil, err
	}
	return ps, nil
}

// appendProtocols is ParseProtocols within lim, appending to dst; on
// error, dst is returned with nothing appended.
func appendProtocols(dst []Protocol, values []string, lim Limits) ([]Protocol, error) {
	maxN, maxB := lim.MaxProtocols, lim.MaxBytes
	if maxN <= 0 {
		maxN = defaultMaxProtocols
	}
	if maxB <= 0 {
		maxB = defaultMaxUpgradeBytes
	}
	start, total, n := len(dst), 0, 0
	for _, v := range values {
		total += len(v)
		if total > maxB {
			return dst[:start], &HeaderError{Field: "Upgrade", Reason: "longer than " + strconv.Itoa(maxB) + " bytes", Err: ErrHeaderTooLarge}
		}
		for len(v) > 0 {
			var elem string
			if elem, v = httplist.Cut(v); elem == "" {
				continue
			}
			p, reason := parseElement(elem)
			if reason != "" {
				return dst[:start], &HeaderError{Field: "Upgrade", Element: elem, Reason: reason}
			}
			if n++; n > maxN {
				return dst[:start], &HeaderError{Field: "Upgrade", Reason: "more than " + strconv.Itoa(maxN) + " protocols", Err: ErrHeaderTooLarge}
			}
			dst = append(dst, p)
		}
	}
	return dst, nil
}

// parseProtocol parses a single `name["/"version]` element, such as a
// registration pattern. Surrounding whitespace is not allowed.
func parseProtocol(s string) (Protocol, error) {
	p, reason := parseElement(s)
	if reason != "" {
		return Protocol{}, &HeaderError{Element: s, Reason: reason}
	}
	return p, nil
}

// parseElement splits a trimmed, non-empty list element into a Protocol.
// It returns a non-empty reason when the element is not `token ["/" token]`.
func parseElement(e string) (Protocol, string) {
	if e == "" {
		return Protocol{}, "empty protocol"
	}
	name, version := e, ""
	slash := strings.IndexByte(e, '/')
	if slash >= 0 {
		name, version = e[:slash], e[slash+1:]
		if name == "" {
			return Protocol{}, "empty protocol name"
		}
		if version == "" {
			return Protocol{}, "empty protocol version after \"/\""
		}
	}
	if r := httplist.CheckToken(name); r != "" {
		return Protocol{}, r + " in protocol name"
	}
	if r := httplist.CheckToken(version); r != "" {
		if strings.IndexByte(version, '/') >= 0 {
			return Protocol{}, "more than one \"/\""
		}
		return Protocol{}, r + " in protocol version"
	}
	return Protocol{Name: name, Version: version}, ""
}

// hasConnectionOption reports whether the Connection lines in h carry
// option as a whole list element, ASCII case-insensitively (RFC 9110
// §7.6.1).
func hasConnectionOption(h http.Header, option string) bool {
	return httpguts.HeaderValuesContainsToken(h["Connection"], option)
}
