package reverseproxy

import (
	"bufio"
	"crypto/tls"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// waitLog waits for a record of lb matching re and returns it.
func waitLog(t *testing.T, lb *logBuffer, re string) string {
	t.Helper()
	rx := regexp.MustCompile(`(?m)^.*` + re + `.*$`)
	var line string
	require.Eventually(t, func() bool {
		line = rx.FindString(lb.String())
		return line != ""
	}, 10*time.Second, 5*time.Millisecond, "no record matching %q in:\n%s", re, lb)
	return line
}

// TestProxyLogsEachUpgrade: every upgrade request the Proxy handles gets
// one DEBUG record when it ends, with the protocol, the client's HTTP
// version and how it ended in words that say what happened; failures to
// reach the backend are also logged as warnings.
func TestProxyLogsEachUpgrade(t *testing.T) {
	t.Run("pairs", logsPairs)
	t.Run("failures", logsFailures)
}

// logRecord starts the record a Proxy logs for each upgrade request.
const logRecord = `level=DEBUG msg="upgrade: proxied connection closed" `

// logsPairs: pairs relayed, ended every way, and requests refused.
func logsPairs(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		switch req.URL.Path {
		case "/close":
			_ = backend101(nc, "echo/1", nil, "bye")
		case "/reset":
			if backend101(nc, "echo/1", nil, "") == nil {
				_ = nc.(*net.TCPConn).SetLinger(0)
			}
		case "/refuse":
			_, _ = io.WriteString(nc, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2\r\nContent-Length: 0\r\n\r\n")
		default:
			echoScript(nc, br, req)
		}
	})
	p := proxyTo(b)
	p.Allow = []string{"echo/*"}
	p.IdleTimeout = 200 * time.Millisecond
	log, lb := debugLogger()
	p.ErrorLog = log
	addr := startH2Proxy(t, p)
	req := func(path, offer string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: " + offer + "\r\n\r\n"
	}

	nc, br, _ := switched(t, addr, req("/", "echo/1"))
	checkEcho(t, nc, br, "ping")
	require.NoError(t, nc.CloseWrite())
	_, _ = io.ReadAll(br)
	assert.Regexp(t, `protocol=echo/1 remote=`+regexp.QuoteMeta(nc.LocalAddr().String())+` proto=HTTP/1\.1 backend=\S+ duration=\S+ how="closed by client" sent=4 received=4$`,
		waitLog(t, lb, logRecord+`.*how="closed by client"`))

	nc, br, _ = switched(t, addr, req("/close", "echo/1"))
	_, _ = io.ReadAll(br)
	require.NoError(t, nc.CloseWrite())
	waitLog(t, lb, logRecord+`protocol=echo/1 .*how="closed by backend" sent=0 received=3$`)

	_, br, _ = switched(t, addr, req("/reset", "echo/1"))
	_, _ = io.ReadAll(br)
	waitLog(t, lb, logRecord+`protocol=echo/1 .*how="reset by backend"`)

	switched(t, addr, req("/", "echo/1"))
	waitLog(t, lb, logRecord+`protocol=echo/1 .*how="idle timeout"`)

	refused(t, addr, req("/refuse", "echo/1, websocket"))
	waitLog(t, lb, logRecord+`protocol=echo/1 .*how="refused by backend with 426" status=426 received=0$`)

	refused(t, addr, req("/", "websocket"))
	waitLog(t, lb, logRecord+`protocol=websocket .*how="refused by proxy with 403" status=403$`)

	c := wiretest.DialH2(t, addr, nil)
	st := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st.Status())
	st.Write([]byte("x"))
	assert.Equal(t, "x", string(st.Read(1)))
	st.Reset(http2.ErrCodeCancel)
	waitLog(t, lb, logRecord+`protocol=echo/1 remote=\S+ proto=HTTP/2\.0 .*how="closed by client \(stream cancelled\)"`)
	assert.NotContains(t, lb.String(), "level=WARN")
}

// logsFailures: backends that cannot be reached or verified, and one that
// refuses.
func logsFailures(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	self, err := url.Parse(ts.URL)
	require.NoError(t, err)
	for _, tc := range []struct {
		target *url.URL
		dialer *upgrade.Dialer
		how    string
		code   int
	}{
		{&url.URL{Scheme: "http", Host: closedAddr(t)}, nil, "backend unreachable", http.StatusBadGateway},
		{self, nil, "backend TLS verification failed", http.StatusBadGateway},
		{self, &upgrade.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 5 * time.Second},
			"refused by backend with 404", http.StatusNotFound},
	} {
		p := New(tc.target)
		p.Dialer = tc.dialer
		log, lb := debugLogger()
		p.ErrorLog = log
		addr := startProxy(t, p, nil)
		resp := refused(t, addr, upgradeReq("GET", "echo/1"))
		assert.Equal(t, tc.code, resp.StatusCode, tc.how)
		waitLog(t, lb, logRecord+`protocol=echo/1 remote=\S+ proto=HTTP/1\.1 backend=\S+ duration=\S+ how="`+regexp.QuoteMeta(tc.how)+`"`)
		if tc.code == http.StatusBadGateway {
			assert.Contains(t, lb.String(), `level=WARN msg="upgrade: proxy: `+tc.how+`"`)
		}
	}
}
