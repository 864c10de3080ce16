package upgrade

import (
	"errors"
)

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// errWriteClosed is the error of a Write after CloseWrite.
var errWriteClosed = errors.New("write after CloseWrite")
