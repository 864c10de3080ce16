package upgrade

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"time"
)

// An answer other than a switch, handed to DialResponse's caller whole:
// its body streams the rest of it from the connection.

// handOver gives the connection to the body of re's live response: the
// handshake's deadline, context and header bound no longer apply, and
// closing the body closes the connection. It returns re, or an error if
// the context ended the handshake just now, having closed the connection.
func (sc *serverConn) handOver(re *ResponseError) error {
	if sc.stop != nil && !sc.stop() {
		sc.close()
		return errors.New("handshake interrupted")
	}
	sc.stop = nil
	if err := sc.raw.SetDeadline(time.Time{}); err != nil {
		sc.close()
		return fmt.Errorf("clearing the handshake deadline: %w", err)
	}
	sc.lr.n = math.MaxInt64
	re.live.Body = &answerBody{body: re.live.Body, conn: sc.raw}
	sc.br = nil // the body reads through it: it never goes back to the pool
	return re
}

// answerBody is the body of an answer that is not a switch: it reads the
// rest of the answer from the connection, and closing it closes the
// connection.
type answerBody struct {
	body io.ReadCloser
	conn net.Conn // the TCP connection to the server (or its proxy)
}

func (b *answerBody) Read(p []byte) (int, error) { return b.body.Read(p) }

// Close closes the connection. The body itself is not closed: net/http's
// would read the rest of the answer first.
func (b *answerBody) Close() error { return b.conn.Close() }
