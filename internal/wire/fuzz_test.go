package wire

import (
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzDecodeRequest runs CheckCounts and kmsg's decoder on any body of any
// request type at any version kmsg knows (a superset of what the broker
// serves). Neither may panic; kmsg may allocate at most maxAmplification
// bytes per body byte after CheckCounts accepts; and CheckCounts may not
// refuse a body kmsg reads (checked where kmsg is sure to finish quickly).
func FuzzDecodeRequest(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	requestKinds(func(key, version int16) {
		f.Add(key, version, randomRequest(rng, key, version).AppendTo(nil))
	})
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		req := kmsg.RequestForKey(key)
		if req == nil || version < 0 || version > req.MaxVersion() {
			if CheckCounts(key, version, body) == nil {
				t.Fatalf("accepted key %d v%d, which kmsg does not know", key, version)
			}
			return
		}
		req.SetVersion(version)
		checkErr := CheckCounts(key, version, body)
		if checkErr != nil && !smallVarints(body) {
			return // kmsg might loop up to 2^32 times before refusing
		}
		var readErr error
		n := allocated(func() { readErr = req.ReadFrom(body) })
		if checkErr == nil && n > uint64(allocBound(len(body))+64<<10) {
			t.Fatalf("%s v%d: decoding %d bytes allocated %d", kmsg.NameForKey(key), version, len(body), n)
		}
		if readErr == nil && checkErr != nil {
			t.Fatalf("%s v%d: kmsg reads the body, CheckCounts refuses it: %v", kmsg.NameForKey(key), version, checkErr)
		}
	})
}

// smallVarints reports whether every varint kmsg could read from body is
// below 2^14 (no two bytes in a row have the high bit). kmsg loops once
// per tagged field a count claims even after running out of bytes, so on
// a body CheckCounts refused, a large count can cost it seconds; with
// these bodies it finishes at once.
func smallVarints(body []byte) bool {
	for i := 1; i < len(body); i++ {
		if body[i-1] >= 0x80 && body[i] >= 0x80 {
			return false
		}
	}
	return true
}
