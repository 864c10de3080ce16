package wskey

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAcceptRFC6455Example checks the example of RFC 6455 §1.3.
func TestAcceptRFC6455Example(t *testing.T) {
	assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", AcceptString("dGhlIHNhbXBsZSBub25jZQ=="))
	// Another length takes the allocating path, with the same formula.
	assert.Equal(t, "JQHdhQRrQ3pd0VAHx7vMGlEiL+4=", AcceptString("short"))
}

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	assert.NotEqual(t, a, b)
	require.Len(t, a, KeyLen)
	raw, err := base64.StdEncoding.DecodeString(a)
	require.NoError(t, err)
	assert.Len(t, raw, 16)
}

func TestAcceptNoAlloc(t *testing.T) {
	var out [AcceptLen]byte
	assert.Zero(t, testing.AllocsPerRun(100, func() { Accept(&out, "dGhlIHNhbXBsZSBub25jZQ==") }))
}
