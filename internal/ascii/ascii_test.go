package ascii

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestEqualFold(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"websocket", "websocket", true},
		{"WebSocket", "websocket", true},
		{"H2C", "h2c", true},
		{"websoc\u212Aet", "websocket", false}, // KELVIN SIGN
		{"\u017Fsh", "ssh", false},             // LONG S
		{"websocke", "websocket", false},
		{"[", "{", false}, // only letters fold
		{"", "", true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, EqualFold(tt.a, tt.b), "%q vs %q", tt.a, tt.b)
	}
	// The trap this package exists for.
	assert.True(t, strings.EqualFold("websoc\u212Aet", "websocket"))
}

func TestLower(t *testing.T) {
	assert.Equal(t, byte('a'), Lower('A'))
	assert.Equal(t, byte('z'), Lower('Z'))
	assert.Equal(t, byte('a'), Lower('a'))
	assert.Equal(t, byte('@'), Lower('@'))
	assert.Equal(t, byte(0xC0), Lower(0xC0))
}
