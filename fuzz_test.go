package upgrade

import (
	"strings"
	"testing"

	"github.com/go-upgrade/upgrade/internal/httplist"
	"github.com/stretchr/testify/require"
)

// FuzzParseProtocols checks the Upgrade parser against the grammar: it
// never panics, every protocol it returns is made of tokens, and
// formatting the result and parsing it again gives the same list.
// The input is split on '\n' into header lines.
func FuzzParseProtocols(f *testing.F) {
	for _, s := range []string{
		"websocket",
		"h2c, websocket, echo/1",
		",, a ,, ,b,",
		" \ta/1\t , \tb ",
		"a\nb/2, c\nd",
		"web socket",
		`"websocket"`,
		"a/b/c",
		"/1",
		"echo/",
		"a;q=1",
		"websoc\u212Aet",
		"a\x00b",
		strings.Repeat("p,", 20),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		lines := strings.Split(in, "\n")
		got, err := ParseProtocols(lines)
		if err != nil {
			require.Nil(t, got)
			return
		}
		parts := make([]string, len(got))
		for i, p := range got {
			require.NotEmpty(t, p.Name)
			require.Empty(t, httplist.CheckToken(p.Name), "name %q", p.Name)
			require.Empty(t, httplist.CheckToken(p.Version), "version %q", p.Version)
			require.NotContains(t, p.Version, "/")
			parts[i] = p.String()
		}
		// Formatting adds ", " separators: re-parse without the byte cap.
		again, err := appendProtocols(nil, []string{strings.Join(parts, ", ")}, Limits{MaxBytes: 1 << 20})
		require.NoError(t, err)
		if len(got) > 0 {
			require.Equal(t, got, again)
		} else {
			require.Empty(t, again)
		}
		// Reference: a naive split gives the same non-empty elements.
		var want []string
		for _, l := range lines {
			for _, e := range strings.Split(l, ",") {
				if e = strings.Trim(e, " \t"); e != "" {
					want = append(want, e)
				}
			}
		}
		require.Equal(t, len(want), len(parts))
		if len(want) > 0 {
			require.Equal(t, want, parts)
		}
	})
}
