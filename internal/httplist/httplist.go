// Package httplist splits and checks the comma-separated lists that HTTP
// header fields carry (RFC 9110 §5.6.1), and the tokens in them
// (RFC 9110 §5.6.2), and writes header fields in wire form: the one home
// of these helpers for the upgrade module's packages.
package httplist

import (
	"iter"
	"net/http"
	"slices"
	"strings"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"golang.org/x/net/http/httpguts"
)

// Cut returns the first element of the list v, with the OWS around it
// trimmed (possibly empty), and the rest of v after the element's comma.
// A loop over a list, without allocating:
//
//	for v != "" {
//		var elem string
//		elem, v = httplist.Cut(v)
//		if elem == "" {
//			continue // RFC 9110 §5.6.1: empty elements are ignored
//		}
//		...
//	}
func Cut(v string) (elem, rest string) {
	if i := strings.IndexByte(v, ','); i >= 0 {
		return TrimOWS(v[:i]), v[i+1:]
	}
	return TrimOWS(v), ""
}

// Elements yields the non-empty elements of the lists in values, in
// order, each trimmed of OWS: every line of a field, as http.Header holds
// them.
func Elements(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for v != "" {
				var e string
				e, v = Cut(v)
				if e != "" && !yield(e) {
					return
				}
			}
		}
	}
}

// TrimOWS removes leading and trailing SP and HTAB (RFC 9110 §5.6.3 OWS).
func TrimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// IsToken reports whether s is a non-empty token (RFC 9110 §5.6.2).
func IsToken(s string) bool {
	return s != "" && CheckToken(s) == ""
}

// CheckToken returns "" if s, which may be empty, consists of tchar only,
// or a short description of its first byte that is not one:
// "whitespace", "quoted string", "control byte", "non-ASCII byte" or
// "separator X".
func CheckToken(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if httpguts.IsTokenRune(rune(c)) {
			continue
		}
		switch {
		case c == ' ' || c == '\t':
			return "whitespace"
		case c == '"':
			return "quoted string"
		case c < 0x20 || c == 0x7f:
			return "control byte"
		case c >= 0x80:
			return "non-ASCII byte"
		default:
			return "separator " + string(rune(c))
		}
	}
	return ""
}

// maxQuoted bounds the bytes of a value Quote shows.
const maxQuoted = 64

// Quote quotes a value received from a peer for an error message: in
// double quotes, at most 64 of its bytes (then "..."), with '"' and '\'
// escaped and every byte below 0x20 or from 0x7f up written as \xNN, so
// that the message is one line of printable ASCII whatever the peer sent.
func Quote(s string) string {
	cut := len(s) > maxQuoted
	if cut {
		s = s[:maxQuoted]
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+5)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	if cut {
		b = append(b, "..."...)
	}
	b = append(b, '"')
	return string(b)
}

// WithoutUpgrade returns a copy of h without its Upgrade and
// HTTP2-Settings fields and the Connection options naming them: the
// request as a plain one (RFC 9110 §7.6.1, §7.8).
func WithoutUpgrade(h http.Header) http.Header {
	h = h.Clone()
	delete(h, "Upgrade")
	delete(h, "Http2-Settings")
	var keep []string
	for o := range Elements(h["Connection"]) {
		if !ascii.EqualFold(o, "upgrade") && !ascii.EqualFold(o, "http2-settings") {
			keep = append(keep, o)
		}
	}
	if keep == nil {
		delete(h, "Connection")
	} else {
		h["Connection"] = []string{strings.Join(keep, ", ")}
	}
	return h
}

// AppendFields appends the fields of h, which must be valid, in wire form
// ("Name: value\r\n" each), sorted by name so that a head is the same
// from run to run.
func AppendFields(b []byte, h http.Header) []byte {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return b
}
