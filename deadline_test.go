package upgrade

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDeadline(t *testing.T) {
	var d deadline
	assert.False(t, isClosed(d.done()), "no deadline")

	d.set(time.Now().Add(-time.Second))
	assert.True(t, isClosed(d.done()), "a deadline in the past has passed")

	d.set(time.Time{})
	assert.False(t, isClosed(d.done()), "clearing the deadline renews it")

	d.set(time.Now().Add(20 * time.Millisecond))
	ch := d.done()
	assert.False(t, isClosed(ch))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline did not pass")
	}

	// Moving a deadline that has not passed keeps the same channel open.
	d.set(time.Now().Add(time.Hour))
	ch = d.done()
	d.set(time.Now().Add(2 * time.Hour))
	assert.Equal(t, ch, d.done())
	assert.False(t, isClosed(ch))
	d.set(time.Time{})
	assert.False(t, isClosed(d.done()))
}
