package upgrade

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseProtocolsValid(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   []Protocol
	}{
		{"single", []string{"websocket"}, []Protocol{{"websocket", ""}}},
		{"versioned", []string{"echo/1"}, []Protocol{{"echo", "1"}}},
		{"list keeps client order", []string{"h2c, websocket, echo/1"}, []Protocol{{"h2c", ""}, {"websocket", ""}, {"echo", "1"}}},
		{"RFC 9110 example", []string{"HTTP/2.0, SHTTP/1.3, IRC/6.9, RTA/x11"}, []Protocol{{"HTTP", "2.0"}, {"SHTTP", "1.3"}, {"IRC", "6.9"}, {"RTA", "x11"}}},
		{"empty elements skipped", []string{",, a ,, ,b,"}, []Protocol{{"a", ""}, {"b", ""}}},
		{"OWS trimmed", []string{" \ta/1\t , \tb "}, []Protocol{{"a", "1"}, {"b", ""}}},
		{"several lines in order", []string{"a", "b/2, c", "d"}, []Protocol{{"a", ""}, {"b", "2"}, {"c", ""}, {"d", ""}}},
		{"empty line", []string{""}, nil},
		{"only commas and spaces", []string{" , ,\t,"}, nil},
		{"duplicates kept", []string{"a, a, A"}, []Protocol{{"a", ""}, {"a", ""}, {"A", ""}}},
		{"all tchars", []string{"!#$%&'*+-.^_`|~09azAZ/!#$%&'*+-.^_`|~"}, []Protocol{{"!#$%&'*+-.^_`|~09azAZ", "!#$%&'*+-.^_`|~"}}},
		{"no header at all", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProtocols(tt.values)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseProtocolsInvalid(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		element string
		reason  string
	}{
		{"space inside", []string{"web socket"}, "web socket", "whitespace"},
		{"space before version", []string{"echo/ 1"}, "echo/ 1", "whitespace"},
		{"space after name", []string{"echo /1"}, "echo /1", "whitespace"},
		{"quoted string", []string{`"websocket"`}, `"websocket"`, "quoted string"},
		{"second slash", []string{"a/b/c"}, "a/b/c", `more than one "/"`},
		{"empty name", []string{"/1"}, "/1", "empty protocol name"},
		{"empty version", []string{"echo/"}, "echo/", "empty protocol version"},
		{"semicolon", []string{"a;q=1"}, "a;q=1", "separator ;"},
		{"at", []string{"a@b"}, "a@b", "separator @"},
		{"colon", []string{"a:b"}, "a:b", "separator :"},
		{"equals", []string{"a=b"}, "a=b", "separator ="},
		{"parenthesis", []string{"(a)"}, "(a)", "separator ("},
		{"comment-like", []string{"a (b)"}, "a (b)", "whitespace"},
		{"control byte", []string{"a\x01b"}, "a\x01b", "control byte"},
		{"DEL", []string{"a\x7f"}, "a\x7f", "control byte"},
		{"non-ASCII", []string{"caf\u00e9"}, "caf\u00e9", "non-ASCII byte"},
		{"Kelvin sign look-alike", []string{"websoc\u212Aet"}, "websoc\u212Aet", "non-ASCII byte"},
		{"bad element on second line", []string{"a", "b, c d"}, "c d", "whitespace"},
		{"separator in version", []string{"a/1,b/{2}"}, "b/{2}", "separator {"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProtocols(tt.values)
			require.Error(t, err)
			var he *HeaderError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, "Upgrade", he.Field)
			assert.Equal(t, tt.element, he.Element)
			assert.Contains(t, he.Reason, tt.reason)
			assert.False(t, errors.Is(err, ErrHeaderTooLarge))
			assert.Contains(t, err.Error(), "malformed Upgrade header")
			assert.Empty(t, got, "nothing is returned from a malformed header")
		})
	}
}

func TestParseProtocolsLimits(t *testing.T) {
	many := strings.Repeat("p, ", defaultMaxProtocols) + "p"
	_, err := ParseProtocols([]string{many})
	require.ErrorIs(t, err, ErrHeaderTooLarge)
	assert.Contains(t, err.Error(), "more than 16 protocols")

	// Exactly at the cap is fine.
	ok := strings.TrimSuffix(strings.Repeat("p,", defaultMaxProtocols), ",")
	got, err := ParseProtocols([]string{ok})
	require.NoError(t, err)
	assert.Len(t, got, defaultMaxProtocols)

	// Bytes are counted over all lines, commas and spaces included.
	long := []string{strings.Repeat(" ", 600), strings.Repeat(",", 600)}
	_, err = ParseProtocols(long)
	require.ErrorIs(t, err, ErrHeaderTooLarge)

	// Configurable.
	_, err = appendProtocols(nil, []string{"a, b, c"}, Limits{MaxProtocols: 2})
	require.ErrorIs(t, err, ErrHeaderTooLarge)
	_, err = appendProtocols(nil, []string{"abcdef"}, Limits{MaxBytes: 5})
	require.ErrorIs(t, err, ErrHeaderTooLarge)
	got, err = appendProtocols(nil, []string{"abcdef"}, Limits{MaxBytes: 6})
	require.NoError(t, err)
	assert.Equal(t, []Protocol{{"abcdef", ""}}, got)
}

func TestParseProtocol(t *testing.T) {
	p, err := parseProtocol("echo/1")
	require.NoError(t, err)
	assert.Equal(t, Protocol{"echo", "1"}, p)
	assert.Equal(t, "echo/1", p.String())
	assert.Equal(t, "websocket", Protocol{Name: "websocket"}.String())
	for _, bad := range []string{"", " echo", "echo,h2c", "a b", "a/b/c", "a\r\nb"} {
		_, err := parseProtocol(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestHeaderErrorMessage(t *testing.T) {
	_, err := ParseProtocols([]string{"ok, bad\x00" + strings.Repeat("x", 100)})
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, `\x00`, "control bytes are escaped")
	assert.Contains(t, msg, "...", "long elements are cut")
	assert.Less(t, len(msg), 160)
}

func TestHasConnectionOption(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  bool
	}{
		{"exact", []string{"Upgrade"}, true},
		{"lower case", []string{"upgrade"}, true},
		{"upper case", []string{"UPGRADE"}, true},
		{"Firefox keep-alive, Upgrade", []string{"keep-alive, Upgrade"}, true},
		{"split over two lines", []string{"keep-alive", "Upgrade"}, true},
		{"OWS and empty elements", []string{" ,\tUpgrade\t, "}, true},
		{"substring upgrades", []string{"upgrades"}, false},
		{"prefix x-upgrade", []string{"x-upgrade"}, false},
		{"inside another token", []string{"keep-alive-upgrade"}, false},
		{"absent", nil, false},
		{"other options only", []string{"close", "keep-alive"}, false},
		{"quoted", []string{`"upgrade"`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, l := range tt.lines {
				h.Add("Connection", l)
			}
			assert.Equal(t, tt.want, hasConnectionOption(h, "upgrade"))
		})
	}
	// Unicode look-alikes never match (U+212A KELVIN SIGN folds to k
	// under strings.EqualFold).
	h := http.Header{"Connection": {"\u212Aeep-alive"}}
	assert.False(t, hasConnectionOption(h, "keep-alive"))
	assert.True(t, strings.EqualFold("\u212Aeep-alive", "keep-alive"), "the trap exists")
}

func TestAppendProtocolsNoAlloc(t *testing.T) {
	values := []string{"h2c, websocket, echo/1"}
	var arr [8]Protocol
	allocs := testing.AllocsPerRun(100, func() {
		got, err := appendProtocols(arr[:0], values, Limits{})
		if err != nil || len(got) != 3 {
			t.Fatal("parse failed")
		}
	})
	assert.Zero(t, allocs)
}
