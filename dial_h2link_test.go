package upgrade

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTP2ClientLinkedByDialOnly builds a program that only serves
// (testdata/link/serve) and one that dials (testdata/link/dial), and
// checks with go tool nm that the HTTP/2 client connection, and x/net's
// Framer under it, are linked into the second only: nothing outside
// Dial, Dialer and HTTP2Transport reaches the client. Neither links QUIC,
// which only the http3 package brings in.
func TestHTTP2ClientLinkedByDialOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two programs")
	}
	t.Parallel()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./testdata/link/serve", "./testdata/link/dial").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	symbols := func(name string) string {
		out, err := exec.Command("go", "tool", "nm", filepath.Join(dir, name)).CombinedOutput()
		require.NoError(t, err, "go tool nm %s: %s", name, out)
		return string(out)
	}
	serve, dial := symbols("serve"), symbols("dial")
	for _, sym := range []string{
		"github.com/go-upgrade/upgrade.(*h2Conn).readLoop",
		"github.com/go-upgrade/upgrade.(*h2Stream).Write",
		"golang.org/x/net/http2.(*Framer).ReadFrame",
	} {
		assert.False(t, strings.Contains(serve, sym), "%s is linked into a program that only serves", sym)
		assert.True(t, strings.Contains(dial, sym), "%s is not linked into a program that dials", sym)
	}
	// QUIC comes in only with the http3 package, which neither imports.
	assert.False(t, strings.Contains(serve, "github.com/quic-go/"), "QUIC linked into a program that only serves")
	assert.False(t, strings.Contains(dial, "github.com/quic-go/"), "QUIC linked into a program that dials")
}
