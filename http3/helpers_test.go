package http3_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/http3"
	qhttp3 "github.com/quic-go/quic-go/http3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	certOnce sync.Once
	cert     tls.Certificate
	certPool *x509.CertPool
)

// testCert returns a self-signed certificate for 127.0.0.1, and a pool
// that trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "http3 test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		require.NoError(t, err)
		leaf, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	return cert, certPool
}

// h3Server is a quic-go HTTP/3 server on 127.0.0.1 in front of an
// upgrade.Server.
type h3Server struct {
	t    testing.TB
	srv  *qhttp3.Server
	us   *upgrade.Server
	pc   net.PacketConn
	url  string // https://127.0.0.1:PORT
	done chan error
	once sync.Once
}

// serveH3 serves h (nil: http3.Handler(us)) over HTTP/3 on 127.0.0.1.
// stop, which cleanup runs too, closes the server and us, and waits for
// the protocol handlers: none outlives the test.
func serveH3(t testing.TB, us *upgrade.Server, h http.Handler, config ...func(*qhttp3.Server)) *h3Server {
	t.Helper()
	c, _ := testCert(t)
	if h == nil {
		h = http3.Handler(us)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &qhttp3.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{c}}, Handler: h}
	for _, f := range config {
		f(srv)
	}
	s := &h3Server{t: t, srv: srv, us: us, pc: pc, url: "https://" + pc.LocalAddr().String(), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(pc) }()
	t.Cleanup(s.stop)
	return s
}

func (s *h3Server) stop() {
	s.once.Do(func() {
		assert.NoError(s.t, s.srv.Close())
		<-s.done
		s.pc.Close()
		if s.us != nil {
			assert.NoError(s.t, s.us.Close())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			assert.NoError(s.t, s.us.Shutdown(ctx), "protocol handlers still active: %v", s.us.ActiveConns())
		}
	})
}

// newTransport returns a Transport that trusts the test certificate,
// closed at cleanup.
func newTransport(t testing.TB) *http3.Transport {
	_, pool := testCert(t)
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(func() { assert.NoError(t, tr.Close()) })
	return tr
}

// echo is a protocol that echoes what it reads until EOF, then ends its
// side.
func echo(c *upgrade.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

// echoServer returns an upgrade.Server with an echo for each pattern.
func echoServer(patterns ...string) *upgrade.Server {
	s := new(upgrade.Server)
	for _, p := range patterns {
		s.HandleFunc(p, echo)
	}
	return s
}

// roundTrip sends msg on an echo and checks that it comes back.
func roundTrip(t testing.TB, c io.ReadWriter, msg string) {
	t.Helper()
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
}

// dial switches to protocol over HTTP/3 with tr, within 10 seconds.
func dial(t testing.TB, tr *http3.Transport, url string, protocols ...string) (*upgrade.Conn, error) {
	t.Helper()
	offers := make([]upgrade.Protocol, len(protocols))
	for i, p := range protocols {
		offers[i] = upgrade.Protocol{Name: p}
	}
	d := &upgrade.Dialer{HTTP3: tr, HandshakeTimeout: 10 * time.Second}
	return d.Dial(context.Background(), url, offers...)
}

// isTimeout reports whether err is a net.Error that timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
