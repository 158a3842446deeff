package server

import (
	"context"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// waitingHandler answers every request with a deferred reply; a request
// whose correlation id is in block waits until that channel closes, as an
// acks=all produce waits for its fsync. Handling the request with
// correlation id last closes handledLast.
type waitingHandler struct {
	block       map[int32]chan struct{}
	last        int32
	handledLast chan struct{}
}

func (h waitingHandler) Versions(key int16) (int16, int16, bool) { return 0, 3, key == 18 }
func (h waitingHandler) Handle(_ context.Context, r *Request) Reply {
	if r.Header.CorrelationID == h.last {
		close(h.handledLast)
	}
	release := h.block[r.Header.CorrelationID]
	return Reply{Wait: func() kmsg.Response {
		if release != nil {
			<-release
		}
		return kmsg.NewPtrApiVersionsResponse()
	}}
}

// An answer that is ready leaves while a later pipelined request still
// waits: held back until the later one was done, five pipelined acks=all
// produce requests were all answered at the last one's fsync, and the
// client, its in-flight slots full, sent nothing meanwhile.
func TestReadyAnswerNotHeldForLaterWait(t *testing.T) {
	// The first answer waits until the reader has taken all three
	// requests, so the writer has later ones queued when it is ready.
	release, handled := make(chan struct{}), make(chan struct{})
	h := waitingHandler{block: map[int32]chan struct{}{1: handled, 3: release}, last: 3, handledLast: handled}
	addr := serveWith(t, h)
	t.Cleanup(func() { close(release) }) // runs first: a failed test must not hang Close
	c := testenv.DialRaw(t, addr)
	c.ReadTimeout = 5 * time.Second
	for corr := int32(1); corr <= 3; corr++ {
		c.Send(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, corr))
	}
	for corr := int32(1); corr <= 2; corr++ {
		body := c.ReadFrame() // fails the test on timeout: held behind request 3
		if got := int32(body[0])<<24 | int32(body[1])<<16 | int32(body[2])<<8 | int32(body[3]); got != corr {
			t.Fatalf("correlation %d, want %d", got, corr)
		}
	}
}
