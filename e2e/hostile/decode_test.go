package hostile

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// hugeCountFrame is the size of each huge-count frame: what a client may
// send under the default socket.request.max.bytes.
const hugeCountFrame = 4 << 20

// rawRequest frames body as a request of key at version (flexible: with
// the empty tagged-field section of request header v2).
func rawRequest(key, version int16, flexible bool, body []byte) []byte {
	frame := make([]byte, 4, 4+16+len(body))
	frame = binary.BigEndian.AppendUint16(frame, uint16(key))
	frame = binary.BigEndian.AppendUint16(frame, uint16(version))
	frame = binary.BigEndian.AppendUint32(frame, 7)
	frame = binary.BigEndian.AppendUint16(frame, 3)
	frame = append(frame, "raw"...)
	if flexible {
		frame = append(frame, 0)
	}
	frame = append(frame, body...)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	return frame
}

// claimAll ends a flexible body with an array count as large as kmsg
// lets through (one byte per element) and zeros up to hugeCountFrame.
func claimAll(body []byte) []byte {
	n := hugeCountFrame - len(body) - 64
	body = binary.AppendUvarint(body, uint64(n+1))
	return append(body, make([]byte, n)...)
}

// attackHugeCounts sends, each on its own connection and one at a time,
// requests whose array counts kmsg accepts (no more elements than bytes)
// but whose elements cannot fit: five ~4 MiB Fetch frames claiming
// millions of partitions (each 64 bytes in memory), Metadata claiming
// millions of topics, CreateTopics claiming millions of topics,
// DeleteRecords claiming millions of partitions, and a Fetch whose
// tagged-field count claims 2^32-1 fields. It waits (up to 10 s) for the
// broker to close or answer each before sending the next, and returns
// the connections and the bytes sent.
func attackHugeCounts(t testing.TB, tg target) ([]*testenv.RawConn, int) {
	fetchHead := make([]byte, 25) // replica, max wait, min/max bytes, isolation, session
	fetchHead = append(fetchHead, 2, 2, 't')
	fetch := rawRequest(1, 12, true, claimAll(fetchHead))

	metadata := rawRequest(3, 12, true, claimAll(nil))
	createTopics := rawRequest(19, 5, true, claimAll(nil))
	deleteRecords := rawRequest(21, 2, true, claimAll([]byte{2, 2, 't'}))

	tags := make([]byte, 25)
	tags = append(tags, 1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f) // no topics, no forgotten, rack "", 2^32-1 tags
	fetchTags := rawRequest(1, 12, true, tags)

	frames := [][]byte{fetch, fetch, fetch, fetch, fetch, metadata, createTopics, deleteRecords, fetchTags}
	var conns []*testenv.RawConn
	sent := 0
	for _, frame := range frames {
		c := tg.dial(t)
		c.SendExpectingClose(frame)
		sent += len(frame)
		c.NC.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.NC.Read(make([]byte, 1))
		conns = append(conns, c)
	}
	return conns, sent
}

// TestHugeCountsAreRefusedBeforeAllocating: each frame closes its
// connection, and the broker allocates little beyond the frames
// themselves (before CheckCounts it allocated ~256 MiB per Fetch frame
// and spun for seconds on the tag count).
//
// PLAINTEXT only: the bound is on everything the process allocates, and
// over SASL_SSL that includes the TLS handshakes and record buffers of
// both sides (4-5 MiB for this attack), which under -race pushes a run
// that allocates 60 of the 64 MiB on PLAINTEXT past the bound without
// the broker decoding any differently. TestEveryAttackInTurnOverSASLSSL
// runs this attack over SASL_SSL under the RSS bound.
func TestHugeCountsAreRefusedBeforeAllocating(t *testing.T) {
	b := startBroker(t, nil)
	tg := plaintext(b.Addr())
	canary(t, tg, 5) // warm up: topic creation, groups, first fetch

	heapBefore := heapInUse()
	var sent int
	allocated := allocatedDuring(func() {
		var conns []*testenv.RawConn
		conns, sent = attackHugeCounts(t, tg)
		for _, c := range conns {
			c.ExpectClosed()
		}
	})
	// The attack builds five distinct frames and the broker reads every
	// frame once: that much is the frames' own cost.
	own := uint64(sent + 5*hugeCountFrame)
	extra := int64(allocated) - int64(own)
	t.Logf("attack: %d MiB sent, %d MiB allocated beyond the frames", sent>>20, extra>>20)
	if extra > 64<<20 {
		t.Errorf("allocated %d MiB beyond the %d MiB of frames during the attack", extra>>20, own>>20)
	}
	if grew := int64(heapInUse()) - int64(heapBefore); grew > 64<<20 {
		t.Errorf("heap in use grew by %d MiB", grew>>20)
	}
	canary(t, tg, 20)
}
