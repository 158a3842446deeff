package hostile

import (
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchRequest is a Fetch (v12, topics by name) of every given partition
// from offset 0, with the request-wide and per-partition byte limits and
// the wait given.
func fetchRequest(topic string, partitions int32, maxBytes, partitionMaxBytes, minBytes, maxWaitMillis int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = maxWaitMillis
	req.MinBytes = minBytes
	req.MaxBytes = maxBytes
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = p
		rp.PartitionMaxBytes = partitionMaxBytes
		rp.LogStartOffset = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// attackAbandonedLongPolls sends 500 fetches that would wait forever for
// data that never comes (MaxWaitMillis and MinBytes at 2^31-1), each on
// its own connection, and hangs up right after sending.
func attackAbandonedLongPolls(t *testing.T, tg target) {
	t.Helper()
	createTopic(t, tg, "longpoll", 1)
	frame := testenv.Frame(fetchRequest("longpoll", 1, math.MaxInt32, math.MaxInt32, math.MaxInt32, math.MaxInt32), 12, 1)
	for range 500 {
		c := tg.dial(t)
		c.Send(frame)
		c.NC.Close()
	}
}

// TestAbandonedLongPollsAreReleased: a long poll whose client hung up
// ends with its connection. Before, each kept its reader and writer
// goroutines, its socket (CLOSE-WAIT) and its buffers until data arrived.
func TestAbandonedLongPollsAreReleased(t *testing.T) {
	onEachListener(t, nil, func(t *testing.T, _ *exactly.Broker, attacker, well target) {
		createTopic(t, well, "warmup", 1)
		goroutines, fds := runtime.NumGoroutine(), openFDs(t)

		attackAbandonedLongPolls(t, attacker)

		eventually(t, 10*time.Second, "goroutines back near their number before the attack", func() bool {
			return runtime.NumGoroutine() <= goroutines+20
		})
		eventually(t, 10*time.Second, "the broker's sockets of the abandoned polls closed", func() bool {
			return openFDs(t) <= fds+20
		})
		canary(t, well, 20)
	})
}
