package extconnect_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	_ "github.com/go-upgrade/upgrade/extconnect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// advertised reports whether a net/http server in this process, speaking
// HTTP/2 with prior knowledge on 127.0.0.1, sends
// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 in its first SETTINGS frame.
func advertised(t *testing.T) bool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: http.NotFoundHandler(), Protocols: &protocols}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		require.NoError(t, srv.Close())
		<-served
	}()

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(c, c)
	require.NoError(t, fr.WriteSettings())
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	sf, ok := f.(*http2.SettingsFrame)
	require.True(t, ok, "first frame %v", f)
	v, ok := sf.Value(http2.SettingEnableConnectProtocol)
	return ok && v == 1
}

// TestAdvertised: with the package imported, net/http's HTTP/2 server
// advertises extended CONNECT, and upgrade.ExtendedConnect says so.
func TestAdvertised(t *testing.T) {
	want := os.Getenv("EXTCONNECT_WANT") != "off"
	assert.Equal(t, want, advertised(t), "SETTINGS_ENABLE_CONNECT_PROTOCOL")
	assert.Equal(t, want, upgrade.ExtendedConnect())
}

// TestEnvironmentDecides: a GODEBUG that names the setting already is left
// alone, so http2xconnect=0 keeps extended CONNECT off.
func TestEnvironmentDecides(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAdvertised$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODEBUG=http2xconnect=0", "EXTCONNECT_WANT=off")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "PASS")
}
