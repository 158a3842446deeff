package server

import (
	"sync/atomic"
	"time"
)

// muteState is how long a connection's reader must not read (KIP-219: a
// broker answers a throttled client at once, with throttle_time_ms set,
// then stops reading from its channel for that time, so a client that
// ignores the throttle gains nothing).
type muteState struct {
	until atomic.Int64 // unix nanoseconds; 0 when never muted
}

// Mute stops the connection's reader from reading the next request for d
// from now. A shorter mute never cuts a longer one short. Safe from any
// goroutine: a fetch's throttle is known only when its deferred response
// is built on the writer.
func (c *Conn) Mute(d time.Duration) {
	if d <= 0 {
		return
	}
	until := time.Now().Add(d).UnixNano()
	for {
		old := c.mute.until.Load()
		if old >= until || c.mute.until.CompareAndSwap(old, until) {
			return
		}
	}
}

// waitUnmuted waits out a mute before the reader reads the next frame. It
// reports false when the server is closing (stop reading at once). The
// wait is bounded by the throttle caps of the quota package (one window).
func (c *Conn) waitUnmuted() bool {
	for {
		if c.srv.ctx.Err() != nil {
			return false
		}
		d := time.Until(time.Unix(0, c.mute.until.Load()))
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.srv.ctx.Done():
			t.Stop()
			return false
		}
	}
}
