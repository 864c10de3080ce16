package httplist

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCut(t *testing.T) {
	for _, tc := range []struct{ in, elem, rest string }{
		{"", "", ""},
		{"a", "a", ""},
		{" a ,b", "a", "b"},
		{"\ta\t, b", "a", " b"},
		{",a", "", "a"},
		{"a b, c", "a b", " c"},
	} {
		elem, rest := Cut(tc.in)
		assert.Equal(t, tc.elem, elem, "%q", tc.in)
		assert.Equal(t, tc.rest, rest, "%q", tc.in)
	}
}

func TestElements(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{""}, nil},
		{[]string{" , ,"}, nil},
		{[]string{"a, b", "c"}, []string{"a", "b", "c"}},
		{[]string{"keep-alive", " Upgrade "}, []string{"keep-alive", "Upgrade"}},
		{[]string{"a,,\tb\t,"}, []string{"a", "b"}},
		{[]string{`"x, y"`}, []string{`"x`, `y"`}}, // no quoted-string awareness: callers reject quotes
	} {
		assert.Equal(t, tc.want, slices.Collect(Elements(tc.in)), "%q", tc.in)
	}
	// Stopping early stops the iteration.
	var seen []string
	for e := range Elements([]string{"a, b", "c"}) {
		seen = append(seen, e)
		if e == "b" {
			break
		}
	}
	assert.Equal(t, []string{"a", "b"}, seen)
}

func TestTrimOWS(t *testing.T) {
	assert.Equal(t, "a b", TrimOWS(" \t a b\t "))
	assert.Equal(t, "", TrimOWS(" \t"))
	assert.Equal(t, "\na\r", TrimOWS("\na\r"), "only SP and HTAB are OWS")
}

func TestCheckToken(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"websocket", ""},
		{"!#$%&'*+-.^_`|~09AZaz", ""},
		{"a b", "whitespace"},
		{"a\tb", "whitespace"},
		{`"q"`, "quoted string"},
		{"a\x00", "control byte"},
		{"a\x7f", "control byte"},
		{"é", "non-ASCII byte"},
		{"a/b", "separator /"},
		{"a;b", "separator ;"},
		{"K\u212a", "non-ASCII byte"},
	} {
		assert.Equal(t, tc.want, CheckToken(tc.in), "%q", tc.in)
	}
	assert.False(t, IsToken(""))
	assert.True(t, IsToken("h2c"))
	assert.False(t, IsToken("h2c/1"))
}

func TestQuote(t *testing.T) {
	assert.Equal(t, `"abc"`, Quote("abc"))
	assert.Equal(t, `"a\"b\\c"`, Quote(`a"b\c`))
	assert.Equal(t, `"\x1b[31m\x0d\x0a\xc3\xa9\x7f"`, Quote("\x1b[31m\r\né\x7f"))
	long := strings.Repeat("x", 100)
	assert.Equal(t, `"`+long[:64]+`..."`, Quote(long))
	assert.Equal(t, `""`, Quote(""))
}

func TestAppendFields(t *testing.T) {
	h := http.Header{
		"Sec-Websocket-Protocol": {"chat"},
		"A-Field":                {"1", "2"},
		"X-Empty":                {""},
	}
	got := string(AppendFields([]byte("head\r\n"), h))
	assert.Equal(t, "head\r\nA-Field: 1\r\nA-Field: 2\r\nSec-Websocket-Protocol: chat\r\nX-Empty: \r\n", got)
	assert.Equal(t, "x", string(AppendFields([]byte("x"), nil)))
}
