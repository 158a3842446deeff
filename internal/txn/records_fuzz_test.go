package txn

import "testing"

// FuzzDecodeBatches: the transaction log is read back from disk after
// crashes; arbitrary bytes must decode or fail cleanly, never panic.
func FuzzDecodeBatches(f *testing.F) {
	batch, err := EncodeBatch([]Record{{PIDBlockEnd: 1000}, {Txn: &Meta{ID: "t"}}}, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(batch)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		DecodeBatches(data, func(int64, Record) error { return nil })
	})
}
