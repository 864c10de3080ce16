package deadline

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDeadline(t *testing.T) {
	var d Deadline
	assert.False(t, d.Passed(), "no deadline")

	d.Set(time.Now().Add(-time.Second))
	assert.True(t, d.Passed(), "a deadline in the past has passed")

	d.Set(time.Time{})
	assert.False(t, d.Passed(), "clearing the deadline renews it")

	d.Set(time.Now().Add(20 * time.Millisecond))
	ch := d.Done()
	assert.False(t, isClosed(ch))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline did not pass")
	}
	assert.True(t, d.Passed())

	// Moving a deadline that has not passed keeps the same channel open.
	d.Set(time.Now().Add(time.Hour))
	ch = d.Done()
	d.Set(time.Now().Add(2 * time.Hour))
	assert.Equal(t, ch, d.Done())
	assert.False(t, isClosed(ch))
	d.Set(time.Time{})
	assert.False(t, d.Passed())
}

// TestDeadlinePendingWait: expired, cleared, extended and then moved to
// the past while a wait is pending, renewed.
func TestDeadlinePendingWait(t *testing.T) {
	var d Deadline
	expired := func() bool {
		select {
		case <-d.Done():
			return true
		default:
			return false
		}
	}
	assert.False(t, expired())
	d.Set(time.Now().Add(-time.Second))
	assert.True(t, expired())
	d.Set(time.Time{})
	assert.False(t, expired(), "cleared after expiring")

	d.Set(time.Now().Add(time.Hour))
	pending := d.Done()
	d.Set(time.Now().Add(2 * time.Hour)) // extended: the same wait goes on
	assert.False(t, expired())
	d.Set(time.Now().Add(-time.Second)) // moved to the past: the pending wait ends
	select {
	case <-pending:
	case <-time.After(2 * time.Second):
		t.Fatal("a past deadline did not end the pending wait")
	}
	d.Set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("a renewed deadline never expired")
	}
}
