// Package wskey computes the keys of the WebSocket opening handshake
// (RFC 6455 §4): the websocket package, the Server's HTTP/2 bridge for
// delegated routes and the reverse proxy share it.
package wskey

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
)

// GUID is appended to the key before hashing (RFC 6455 §1.3).
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// KeyLen is the length of a valid Sec-WebSocket-Key: 16 bytes in base64.
const KeyLen = 24

// AcceptLen is the length of a Sec-WebSocket-Accept value: 20 bytes
// (SHA-1) in base64.
const AcceptLen = 28

// Accept writes the Sec-WebSocket-Accept value for key into dst,
// base64(SHA-1(key + GUID)), without allocating when key has the valid
// length.
func Accept(dst *[AcceptLen]byte, key string) {
	var buf [KeyLen + len(GUID)]byte
	var b []byte
	if len(key) == KeyLen {
		copy(buf[:], key)
		copy(buf[KeyLen:], GUID)
		b = buf[:]
	} else {
		b = make([]byte, 0, len(key)+len(GUID))
		b = append(append(b, key...), GUID...)
	}
	sum := sha1.Sum(b)
	base64.StdEncoding.Encode(dst[:], sum[:])
}

// AcceptString returns the Sec-WebSocket-Accept value for key.
func AcceptString(key string) string {
	var out [AcceptLen]byte
	Accept(&out, key)
	return string(out[:])
}

// NewKey returns a fresh random Sec-WebSocket-Key.
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return base64.StdEncoding.EncodeToString(b[:])
}
