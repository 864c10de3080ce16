package main

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable returns s with every character a terminal could act on made
// visible, so that text derived from the server's bytes (a status line, a
// header field, a close reason, an error quoting them) can be printed as
// a diagnostic without the server reaching the user's terminal: no escape
// sequence, no window title, no cursor movement, no reordered text.
//
// Escaped are the C0 controls except TAB (ESC as \x1b, BEL as \a, line
// breaks as \n and \r, so the result is one line), DEL, the C1 controls
// whether UTF-8-encoded (U+009B as \u009b) or raw bytes (0x9B, CSI to an
// 8-bit terminal, as \x9b, like any byte of invalid UTF-8), and every
// other rune that is not printable, such as bidirectional overrides and
// zero-width characters (U+202E as \u202e). Backslashes are kept as they
// are, so already-quoted text stays readable.
//
// Data copied to stdout (echo/1 bytes, WebSocket messages, an h2c body) is
// not diagnostic text and is not passed through printable.
func printable(s string) string {
	safe := true
	for _, r := range s {
		if needsEscape(r) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1, r < utf8.RuneSelf && needsEscape(r):
			c := s[i]
			switch c {
			case '\a':
				b.WriteString(`\a`)
			case '\b':
				b.WriteString(`\b`)
			case '\f':
				b.WriteString(`\f`)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\v':
				b.WriteString(`\v`)
			default:
				b.WriteString(`\x`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			}
			size = 1
		case needsEscape(r):
			if r <= 0xffff {
				b.WriteString(`\u`)
				for shift := 12; shift >= 0; shift -= 4 {
					b.WriteByte(hex[r>>shift&0xf])
				}
			} else {
				b.WriteString(`\U`)
				for shift := 28; shift >= 0; shift -= 4 {
					b.WriteByte(hex[r>>shift&0xf])
				}
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// needsEscape reports whether r must not reach a terminal as it is:
// invalid UTF-8 (decoded as RuneError) or a rune that is not printable,
// TAB and SP excepted.
func needsEscape(r rune) bool {
	return r != '\t' && r != ' ' && (r == utf8.RuneError || !unicode.IsPrint(r))
}
