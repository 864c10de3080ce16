package websocket

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-upgrade/upgrade/internal/httplist"
)

// An Extension is one element of a Sec-WebSocket-Extensions header field
// (RFC 6455 §9.1): an extension name with its parameters, such as
// "permessage-deflate; client_max_window_bits".
type Extension struct {
	Name   string           // extension token, e.g. "permessage-deflate"
	Params []ExtensionParam // in the order given
}

// An ExtensionParam is a parameter of an Extension.
type ExtensionParam struct {
	Name  string // parameter token
	Value string // the value, unquoted; "" when the parameter has none
}

// String formats e as it appears in a Sec-WebSocket-Extensions field.
// Values that are not tokens are quoted.
func (e Extension) String() string {
	var b strings.Builder
	b.WriteString(e.Name)
	for _, p := range e.Params {
		b.WriteString("; ")
		b.WriteString(p.Name)
		if p.Value != "" {
			b.WriteByte('=')
			if httplist.IsToken(p.Value) {
				b.WriteString(p.Value)
			} else {
				b.WriteByte('"')
				for i := 0; i < len(p.Value); i++ {
					if c := p.Value[i]; c == '"' || c == '\\' {
						b.WriteByte('\\')
					}
					b.WriteByte(p.Value[i])
				}
				b.WriteByte('"')
			}
		}
	}
	return b.String()
}

// FormatExtensions formats exts as one Sec-WebSocket-Extensions value.
func FormatExtensions(exts []Extension) string {
	s := make([]string, len(exts))
	for i, e := range exts {
		s[i] = e.String()
	}
	return strings.Join(s, ", ")
}

// ParseExtensions parses every Sec-WebSocket-Extensions line in values, in
// order, into the list of extensions they carry:
//
//	extension-list = 1#extension
//	extension      = token *( ";" token [ "=" ( token / quoted-string ) ] )
//
// Empty list elements are skipped; anything else that does not follow the
// grammar is an error that names the header and the offending value.
func ParseExtensions(values []string) ([]Extension, error) {
	var exts []Extension
	for _, v := range values {
		p := extParser{s: v}
		for {
			p.skipOWS()
			if p.eof() {
				break
			}
			if p.peek() == ',' {
				p.i++
				continue
			}
			e, err := p.extension()
			if err != nil {
				return nil, &HeaderError{Field: "Sec-WebSocket-Extensions", Value: v, Err: err}
			}
			exts = append(exts, e)
			p.skipOWS()
			if p.eof() {
				break
			}
			if p.peek() != ',' {
				return nil, &HeaderError{Field: "Sec-WebSocket-Extensions", Value: v,
					Err: fmt.Errorf("unexpected %s after extension %s", httplist.Quote(string(p.peek())), httplist.Quote(e.Name))}
			}
			p.i++
		}
	}
	return exts, nil
}

// extParser scans one Sec-WebSocket-Extensions line.
type extParser struct {
	s string
	i int
}

func (p *extParser) eof() bool  { return p.i >= len(p.s) }
func (p *extParser) peek() byte { return p.s[p.i] }

func (p *extParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *extParser) token() string {
	start := p.i
	for !p.eof() && httplist.IsToken(p.s[p.i:p.i+1]) {
		p.i++
	}
	return p.s[start:p.i]
}

// extension parses `token *( OWS ";" OWS param )`.
func (p *extParser) extension() (Extension, error) {
	e := Extension{Name: p.token()}
	if e.Name == "" {
		return e, errors.New("missing extension name")
	}
	for {
		p.skipOWS()
		if p.eof() || p.peek() != ';' {
			return e, nil
		}
		p.i++
		p.skipOWS()
		name := p.token()
		if name == "" {
			return e, fmt.Errorf("missing parameter name in extension %s", httplist.Quote(e.Name))
		}
		param := ExtensionParam{Name: name}
		p.skipOWS()
		if !p.eof() && p.peek() == '=' {
			p.i++
			p.skipOWS()
			v, err := p.value()
			if err != nil {
				return e, fmt.Errorf("parameter %s of extension %s: %w", httplist.Quote(name), httplist.Quote(e.Name), err)
			}
			param.Value = v
		}
		e.Params = append(e.Params, param)
	}
}

// value parses `token / quoted-string`; a quoted value must itself be a
// token once unquoted (RFC 6455 §9.1).
func (p *extParser) value() (string, error) {
	if p.eof() {
		return "", errors.New("missing value")
	}
	if p.peek() != '"' {
		if v := p.token(); v != "" {
			return v, nil
		}
		return "", errors.New("value is not a token")
	}
	p.i++
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			v := b.String()
			if !httplist.IsToken(v) {
				return "", fmt.Errorf("quoted value %s is not a token", httplist.Quote(v))
			}
			return v, nil
		case '\\':
			if p.eof() {
				return "", errors.New("unterminated quoted string")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated quoted string")
}

// HeaderError reports a malformed WebSocket header field.
type HeaderError struct {
	Field string // header field name, e.g. "Sec-WebSocket-Extensions"
	Value string // the value as received
	Err   error  // what is wrong with it
}

// Error names the field, the value and the problem.
func (e *HeaderError) Error() string {
	return "websocket: malformed " + e.Field + " " + httplist.Quote(e.Value) + ": " + e.Err.Error()
}

// Unwrap returns the underlying cause.
func (e *HeaderError) Unwrap() error { return e.Err }
