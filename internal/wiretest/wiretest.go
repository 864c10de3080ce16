// Package wiretest holds what the tests of the upgrade packages share to
// exchange HTTP/1.1 bytes with a server and see the answer exactly as
// sent: reading a response whose Connection field is kept whole
// (ReadResponse), a raw client connection with deadlines (Dial), and an
// exchange served in process, without a socket (Serve).
package wiretest

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
)

// ReadResponse reads one response from br, like http.ReadResponse for a
// request with method, but its Header keeps the Connection field lines as
// sent: http.ReadResponse removes the whole field when it carries
// "close", and tests of what a server sends need to see the rest of it.
func ReadResponse(br *bufio.Reader, method string) (*http.Response, error) {
	connection := PeekConnection(br)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, err
	}
	if connection != nil {
		resp.Header["Connection"] = connection
	}
	return resp, nil
}

// PeekConnection returns the Connection field lines of the response
// header block at the start of br, without consuming anything, or nil
// when the block has none or does not fit in br's buffer.
func PeekConnection(br *bufio.Reader) []string {
	for n := 1; n <= br.Size(); n++ {
		b, err := br.Peek(n)
		if err != nil {
			return nil
		}
		if !bytes.HasSuffix(b, []byte("\r\n\r\n")) && !bytes.HasSuffix(b, []byte("\n\n")) {
			continue
		}
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
		if _, err := tp.ReadLine(); err != nil {
			return nil
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return nil
		}
		return h["Connection"]
	}
	return nil
}
