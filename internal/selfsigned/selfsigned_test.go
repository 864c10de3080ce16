package selfsigned

import (
	"crypto/x509"
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCert(t *testing.T) {
	c, err := Cert("test")
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	require.NoError(t, err)
	assert.Equal(t, "test", leaf.Subject.CommonName)
	assert.NoError(t, leaf.VerifyHostname("127.0.0.1"))
	assert.NoError(t, leaf.VerifyHostname("::1"))
	assert.NoError(t, leaf.VerifyHostname("localhost"))
	assert.True(t, leaf.NotBefore.Before(time.Now()) && leaf.NotAfter.After(time.Now().Add(23*time.Hour)))

	h, err := base64.StdEncoding.DecodeString(SPKIHash(c))
	require.NoError(t, err)
	assert.Len(t, h, 32)
	c2, err := Cert("test")
	require.NoError(t, err)
	assert.NotEqual(t, SPKIHash(c), SPKIHash(c2), "a fresh key each time")
}
