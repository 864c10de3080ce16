package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain text, tab\there", "plain text, tab\there"},
		{`already "quoted\x1b"`, `already "quoted\x1b"`},
		{"\x1b[2J", `\x1b[2J`},
		{"title\x1b]0;pwned\x07", `title\x1b]0;pwned\a`},
		{"two\r\nlines\n", `two\r\nlines\n`},
		{"nul\x00 del\x7f bs\b", `nul\x00 del\x7f bs\b`},
		{"c1 \u0085 \u009b1m", `c1 \u0085 \u009b1m`},
		{"raw 8-bit csi \x9b1m", `raw 8-bit csi \x9b1m`},
		{"cut utf-8 \xe2\x80", `cut utf-8 \xe2\x80`},
		{"bidi \u202eevil\u202c zw\u200b", `bidi \u202eevil\u202c zw\u200b`},
		{"private use \U000f0000", `private use \U000f0000`},
		{"ünïcödé ✓ 日本", "ünïcödé ✓ 日本"},
	} {
		assert.Equal(t, tc.want, printable(tc.in), "%q", tc.in)
	}
}
