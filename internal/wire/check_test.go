package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestEveryRequestLayoutDerives: a layout kmsg's encoder cannot explain
// (a new field type, a field both inline and tagged) fails here, not on a
// client's request.
func TestEveryRequestLayoutDerives(t *testing.T) {
	n := 0
	requestKinds(func(key, version int16) {
		if _, err := layoutFor(key, version); err != nil {
			t.Error(err)
		}
		n++
	})
	if n < 300 {
		t.Fatalf("derived %d layouts; kmsg knows far more request versions", n)
	}
}

// TestAcceptsEveryValidRequest is the differential test against kmsg's
// encoder: every request type at every version, encoded from random
// content, is accepted.
func TestAcceptsEveryValidRequest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	requestKinds(func(key, version int16) {
		for range 40 {
			req := randomRequest(rng, key, version)
			body := req.AppendTo(nil)
			if err := CheckCounts(key, version, body); err != nil {
				t.Fatalf("%s v%d: valid request refused: %v\n%x", kmsg.NameForKey(key), version, err, body)
			}
			back := kmsg.RequestForKey(key)
			back.SetVersion(version)
			if err := back.ReadFrom(body); err != nil {
				t.Fatalf("%s v%d: the generator made a request kmsg cannot read: %v", kmsg.NameForKey(key), version, err)
			}
		}
	})
}

// TestRefusesCountsTheBodyCannotHold: the counts kmsg lets through (one
// byte per element) but whose elements cannot fit.
func TestRefusesCountsTheBodyCannotHold(t *testing.T) {
	const n = 1 << 16
	// Fetch v4: replica, max wait, min bytes, max bytes, isolation, then
	// one topic "t" claiming n partitions (16 bytes each) in n bytes.
	fetch := make([]byte, 17)
	fetch = binary.BigEndian.AppendUint32(fetch, 1)
	fetch = binary.BigEndian.AppendUint16(fetch, 1)
	fetch = append(fetch, 't')
	fetch = binary.BigEndian.AppendUint32(fetch, n)
	fetch = append(fetch, make([]byte, n)...)

	// Metadata v12 (flexible): n topics of 18 bytes at least in n bytes.
	metadata := binary.AppendUvarint(nil, n+1)
	metadata = append(metadata, make([]byte, n)...)

	// Fetch v12 whose request-level tagged fields claim 2^32-1 tags:
	// kmsg loops once per claimed tag before failing.
	tags := make([]byte, 29)
	tags[25], tags[26], tags[27] = 1, 1, 1 // no topics, no forgotten topics, rack ""
	tags = append(tags[:28], 0xff, 0xff, 0xff, 0xff, 0x0f)

	for _, c := range []struct {
		name         string
		key, version int16
		body         []byte
		tagCount     bool
	}{
		{"fetch partitions", 1, 4, fetch, false},
		{"metadata topics", 3, 12, metadata, false},
		{"tagged field count", 1, 12, tags, true},
	} {
		err := CheckCounts(c.key, c.version, c.body)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want a refusal", c.name, err)
		}
		if errors.Is(err, errTagCount) != c.tagCount {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// maxAmplification bounds what kmsg allocates decoding a body CheckCounts
// accepted, per body byte, as TestDecodeAllocationIsBoundedByBody
// measures it: about 21 for an array of minimal elements whose Go struct
// is large (fields of other versions, slices, strings), about 40 for
// unknown tagged fields with distinct keys (a map entry per 4 bytes).
const maxAmplification = 48

// allocBound is how many bytes kmsg may allocate decoding an accepted
// body of n bytes.
func allocBound(n int) int {
	if raceEnabled {
		return 3 * maxAmplification * n
	}
	return maxAmplification * n
}

// costSlack is how far what kmsg allocates may exceed DecodeCost: the
// runtime rounds allocations up to size classes (at most 1.25×) and map
// growth doubles buckets; the race detector unfuses appends.
func costSlack() float64 {
	if raceEnabled {
		return 6
	}
	return 2
}

// allocated is the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeAllocationIsBoundedByBody fills each array of each request
// type and version with as many minimal elements as 4 KiB holds (the
// largest count CheckCounts accepts) and measures what kmsg allocates
// decoding it. Unknown tagged fields, each a map entry, are measured too.
func TestDecodeAllocationIsBoundedByBody(t *testing.T) {
	const budget = 4 << 10
	worst, worstAt := 0.0, ""
	measure := func(key, version int16, body []byte, what string) {
		cost, err := DecodeCost(key, version, body)
		if err != nil {
			t.Fatalf("%s v%d %s: minimal request refused: %v", kmsg.NameForKey(key), version, what, err)
		}
		req := kmsg.RequestForKey(key)
		req.SetVersion(version)
		n := allocated(func() { err = req.ReadFrom(body) })
		if err != nil {
			t.Fatalf("%s v%d %s: kmsg cannot read the minimal request: %v", kmsg.NameForKey(key), version, what, err)
		}
		// The estimate the server charges must cover what kmsg really
		// allocates (up to the runtime's rounding of size classes, and
		// the race detector's unfused appends).
		if slack := uint64(float64(cost)*costSlack()) + 4096; n > slack {
			t.Errorf("%s v%d %s: kmsg allocated %d bytes, DecodeCost estimated %d", kmsg.NameForKey(key), version, what, n, cost)
		}
		if r := float64(n) / float64(len(body)); r > worst {
			worst, worstAt = r, fmt.Sprintf("%s v%d %s (%d bytes allocated for %d)", kmsg.NameForKey(key), version, what, n, len(body))
		}
	}
	requestKinds(func(key, version int16) {
		m, _ := layoutFor(key, version)
		for i, a := range arrays(m.root) {
			count := budget / max(a.elem.min, 1)
			body, _ := minimalStruct(nil, m.root, m.flexible, a, count)
			measure(key, version, body, fmt.Sprintf("array %d", i))
		}
		if m.flexible {
			body, _ := minimalStruct(nil, m.root, true, nil, 0)
			body = body[:len(body)-1]
			body = binary.AppendUvarint(body, budget/4)
			for k := range budget / 4 {
				body = binary.AppendUvarint(body, uint64(20000+k))
				body = append(body, 0)
			}
			measure(key, version, body, "unknown tags")
		}
	})
	t.Logf("worst: %.1f bytes allocated per body byte: %s", worst, worstAt)
	if bound := allocBound(1); worst > float64(bound) {
		t.Errorf("decoding allocates %.1f bytes per body byte (%s), above %d", worst, worstAt, bound)
	}
}

// TestDecodeCostOfRecordsIsTheirHeaders: a Produce request's records are
// bytes kmsg leaves in the body, so a large Produce costs its decoded
// headers only (the server charges DecodeCost on top of the frame; counting
// the records twice would halve the produce bytes the budget admits), and
// kmsg indeed allocates no more than that.
func TestDecodeCostOfRecordsIsTheirHeaders(t *testing.T) {
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	for i := range 4 {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = fmt.Sprintf("t%d", i)
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = make([]byte, 1<<20)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	for _, v := range []int16{3, 9, 12} {
		req.SetVersion(v)
		body := req.AppendTo(nil)
		cost, err := DecodeCost(0, v, body)
		if err != nil {
			t.Fatal(err)
		}
		if cost > 4<<10 {
			t.Errorf("Produce v%d of 4 MiB of records: DecodeCost %d, want its headers only", v, cost)
		}
		dec := kmsg.NewPtrProduceRequest()
		dec.SetVersion(v)
		if n := allocated(func() { err = dec.ReadFrom(body) }); err != nil || n > uint64(float64(cost)*costSlack())+4096 {
			t.Errorf("Produce v%d: kmsg allocated %d bytes (err %v), DecodeCost %d", v, n, err, cost)
		}
	}
}
