package track

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// closer counts its Close calls and untracks itself, as a delegated
// connection does.
type closer struct {
	t      *Tracker
	key    string
	closed atomic.Int32
}

func (c *closer) Close() error {
	if c.closed.Add(1) == 1 {
		c.t.Untrack(c, c.key)
	}
	return nil
}

func TestReserveCaps(t *testing.T) {
	var tr Tracker
	require.True(t, tr.Reserve("a", 1, 2))
	assert.False(t, tr.Reserve("a", 1, 2), "the key's cap")
	require.True(t, tr.Reserve("b", 0, 2))
	assert.False(t, tr.Reserve("c", 0, 2), "the total cap")
	assert.Equal(t, map[string]int{"a": 1, "b": 1}, tr.Active())
	tr.Rekey("b", "c")
	assert.Equal(t, map[string]int{"a": 1, "c": 1}, tr.Active())
	assert.True(t, tr.Release("a"))
	assert.True(t, tr.Release("c"))
	assert.False(t, tr.Release("c"), "no slot left to release")
	assert.Empty(t, tr.Active())
}

func TestShutdownWaitsThenCloses(t *testing.T) {
	var tr Tracker
	require.True(t, tr.Reserve("a", 0, 0))
	c := &closer{t: &tr, key: "a"}
	require.True(t, tr.Track(c))
	life, drain := tr.Lifetime()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := tr.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.True(t, tr.Closing())
	assert.True(t, isClosed(drain), "drain signalled")
	assert.Error(t, life.Err(), "lifetime over after the grace period")
	assert.EqualValues(t, 1, c.closed.Load(), "closed at the end of the grace period")
	assert.Empty(t, tr.Active())
	assert.False(t, tr.Track(&closer{t: &tr}), "no new connection once closing")
}

func TestShutdownReturnsWhenIdle(t *testing.T) {
	var tr Tracker
	require.True(t, tr.Reserve("a", 0, 0))
	c := &closer{t: &tr, key: "a"}
	require.True(t, tr.Track(c))
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.Close()
	}()
	require.NoError(t, tr.Shutdown(context.Background()))
	assert.EqualValues(t, 1, c.closed.Load())
}

func TestAdoptAfterGraceCloses(t *testing.T) {
	var tr Tracker
	tr.CloseAll()
	require.True(t, tr.Reserve("a", 0, 0))
	c := &closer{t: &tr, key: "a"}
	tr.Adopt(c)
	assert.EqualValues(t, 1, c.closed.Load(), "adopted after the grace period: closed at once")
	assert.Empty(t, tr.Active())
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
