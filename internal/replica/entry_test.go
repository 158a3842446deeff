package replica

import (
	"bytes"
	"testing"
)

func TestEntriesRoundTrip(t *testing.T) {
	batch := []byte("a record batch's bytes")
	e, err := Decode(EncodeBatch(42, batch))
	if err != nil || e.Kind != KindBatch || e.NowMs != 42 || !bytes.Equal(e.Batch, batch) {
		t.Fatalf("batch: %+v %v", e, err)
	}
	m := Marker{ProducerID: 7, ProducerEpoch: 3, Commit: true, CoordinatorEpoch: 9, FirstOffset: -1}
	e, err = Decode(EncodeMarker(43, m))
	if err != nil || e.Kind != KindMarker || e.NowMs != 43 || e.Marker != m {
		t.Fatalf("marker: %+v %v", e, err)
	}
	e, err = Decode(EncodeDeleteRecords(44, 1234))
	if err != nil || e.Kind != KindDeleteRecords || e.Offset != 1234 {
		t.Fatalf("delete-records: %+v %v", e, err)
	}
	e, err = Decode(EncodeExpire(45))
	if err != nil || e.Kind != KindExpire || e.NowMs != 45 {
		t.Fatalf("expire: %+v %v", e, err)
	}
}

func TestMalformedEntriesAreRefused(t *testing.T) {
	bad := [][]byte{
		nil,
		{1, 0, 0},
		EncodeBatch(1, nil),
		append(EncodeMarker(1, Marker{}), 0),
		EncodeMarker(1, Marker{})[:15],
		append(EncodeExpire(1), 0),
		EncodeDeleteRecords(1, 5)[:12],
		append([]byte{9}, make([]byte, 8)...),
	}
	m := EncodeMarker(1, Marker{})
	m[headerBytes+10] = 2 // neither commit nor abort
	bad = append(bad, m)
	for i, b := range bad {
		if _, err := Decode(b); err == nil {
			t.Errorf("entry %d (%x) decoded", i, b)
		}
	}
}

// FuzzDecodeEntry: any bytes decode or are refused, never panic, and what
// decodes encodes back to the same bytes.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(EncodeBatch(1, []byte("x")))
	f.Add(EncodeMarker(2, Marker{ProducerID: 1, Commit: true, FirstOffset: 5}))
	f.Add(EncodeDeleteRecords(3, 10))
	f.Add(EncodeExpire(4))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			return
		}
		var again []byte
		switch e.Kind {
		case KindBatch:
			again = EncodeBatch(e.NowMs, e.Batch)
		case KindMarker:
			again = EncodeMarker(e.NowMs, e.Marker)
		case KindDeleteRecords:
			again = EncodeDeleteRecords(e.NowMs, e.Offset)
		case KindExpire:
			again = EncodeExpire(e.NowMs)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("%x decoded to %+v, which encodes to %x", data, e, again)
		}
	})
}
