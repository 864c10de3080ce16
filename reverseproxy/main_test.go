package reverseproxy

import (
	"testing"

	"github.com/go-upgrade/upgrade"
	_ "github.com/go-upgrade/upgrade/extconnect" // RFC 8441 in net/http's HTTP/2 server
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestExtendedConnectEnabledForTests: the HTTP/2 tests need net/http's
// server to accept extended CONNECTs, which extconnect turns on.
func TestExtendedConnectEnabledForTests(t *testing.T) {
	require.True(t, upgrade.ExtendedConnect(), "this test binary imports extconnect")
}
