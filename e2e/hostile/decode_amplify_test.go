package hostile

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// amplifyingProduce is a well-formed 1 MiB Produce v9 (acks=all) of
// about 350k topics with empty names and no partitions: 3 bytes each on
// the wire and a 64-byte struct each once decoded, so decoding it
// allocates ~22 MiB, and its answer as much again. Every count fits the
// body: CheckCounts accepts it.
func amplifyingProduce() []byte {
	const size = 1 << 20
	body := []byte{0}                                  // transactional id: null
	body = binary.BigEndian.AppendUint16(body, 0xffff) // acks=-1
	body = binary.BigEndian.AppendUint32(body, 5000)   // timeout
	n := (size - 32) / 3
	body = binary.AppendUvarint(body, uint64(n+1))
	for range n {
		body = append(body, 1, 1, 0) // name "", no partitions, no tags
	}
	body = append(body, 0) // no tags
	return rawRequest(0, 9, true, body)
}

// attackAmplifyingRequests sends, on each of 16 connections at once,
// three amplifying Produce requests (48 × ~45 MiB decoded and answered,
// 2 GiB in all if held together), reads the answers, and closes the
// connections once the broker answered or closed them, or after 20 s.
func attackAmplifyingRequests(t *testing.T, tg target) {
	t.Helper()
	frame := amplifyingProduce()
	var wg sync.WaitGroup
	for range 16 {
		c := tg.dial(t)
		wg.Go(func() {
			defer c.NC.Close()
			c.NC.SetDeadline(time.Now().Add(20 * time.Second))
			for range 3 {
				if _, err := c.NC.Write(frame); err != nil {
					return
				}
			}
			for range 3 {
				var size [4]byte
				if _, err := io.ReadFull(c.NC, size[:]); err != nil { // a TLS record may split it
					return
				}
				buf := make([]byte, binary.BigEndian.Uint32(size[:]))
				if _, err := io.ReadFull(c.NC, buf); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDecodedRequestsAreBudgeted: requests whose counts fit their bodies
// but decode to far more memory are charged to queued.max.request.bytes
// by what decoding and answering them allocates, not by their bytes
// alone, so 48 of them at once cannot take 2 GiB. Before, only the
// frames' 48 MiB counted.
func TestDecodedRequestsAreBudgeted(t *testing.T) {
	const budget = 256 << 20
	b := startMetricsBroker(t, map[string]string{"queued.max.request.bytes": fmt.Sprint(budget)})
	base := heapInUse()
	heap := sample(heapInUse)
	used := sample(func() uint64 { return uint64(metric(t, b, metricPoolUsed)) })

	attackAmplifyingRequests(t, plaintext(b.Addr()))

	peakUsed, peakHeap := used.end(), heap.end()
	grew := int64(peakHeap) - int64(base)
	t.Logf("request bytes in flight peaked at %d MiB; heap grew by %d MiB", peakUsed>>20, grew>>20)
	if peakUsed > budget {
		t.Errorf("request bytes in flight peaked at %d, above queued.max.request.bytes %d", peakUsed, budget)
	}
	// The charge covers the decoded request and its answer. The heap is
	// sampled after a collection that runs while the broker allocates:
	// what is allocated during the cycle survives it, so a sample can
	// show up to twice what is live.
	if grew > 2*budget+64<<20 {
		t.Errorf("heap grew by %d MiB with queued.max.request.bytes at %d MiB", grew>>20, budget>>20)
	}
	canary(t, plaintext(b.Addr()), 20)
}
