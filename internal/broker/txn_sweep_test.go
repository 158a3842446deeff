package broker

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/txn"
	"github.com/exactly/exactly/internal/vfs"
)

// txnTestBatch is a transactional batch of one record.
func txnTestBatch(pid int64, epoch int16, seq int32) []byte {
	rec := []byte{0}
	rec = binary.AppendVarint(rec, 0)
	rec = binary.AppendVarint(rec, 0)
	rec = binary.AppendVarint(rec, -1)
	rec = binary.AppendVarint(rec, 1)
	rec = append(rec, 'x')
	rec = binary.AppendVarint(rec, 0)
	b := make([]byte, record.HeaderSize)
	b = binary.AppendVarint(b, int64(len(rec)))
	b = append(b, rec...)
	be := binary.BigEndian
	now := uint64(time.Now().UnixMilli())
	be.PutUint32(b[8:], uint32(len(b)-12))
	b[16] = 2
	be.PutUint16(b[21:], record.AttrTransactional)
	be.PutUint64(b[27:], now)
	be.PutUint64(b[35:], now)
	be.PutUint64(b[43:], uint64(pid))
	be.PutUint16(b[51:], uint16(epoch))
	be.PutUint32(b[53:], uint32(seq))
	be.PutUint32(b[57:], 1)
	be.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// TestSweepAbortsOnlyHangingTransactions: a transaction open on a
// partition that the coordinator does not run is aborted on the second
// sweep that finds it; one the coordinator runs is left alone.
func TestSweepAbortsOnlyHangingTransactions(t *testing.T) {
	b, err := New(Config{FS: vfs.NewMem(), DataDir: "/data", AdvertisedHost: "127.0.0.1", AdvertisedPort: 9092,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.createTopic("h", 2, nil); err != nil {
		t.Fatal(err)
	}
	appendTxn := func(p int32, pid int64, epoch int16) {
		t.Helper()
		part := b.partition("h", p)
		batch := txnTestBatch(pid, epoch, 0)
		h, err := record.Validate(batch)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := part.Append(batch, h); err != nil {
			t.Fatal(err)
		}
		if err := part.WaitDurable(part.LogEndOffset()); err != nil {
			t.Fatal(err)
		}
	}
	// Partition 0: a batch from a producer the coordinator never heard of.
	appendTxn(0, 424242, 0)
	// Partition 1: a transaction the coordinator runs.
	id := "legit"
	init, w := b.coords().txn.d.InitProducerID(txn.InitRequest{TxnID: &id, TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
	if err := w(); err != nil || init.Err != nil {
		t.Fatal(err, init.Err)
	}
	wait, err := b.checkTransactionalProduce(id, init.ProducerID, init.ProducerEpoch, "h", 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	appendTxn(1, init.ProducerID, init.ProducerEpoch)

	stuck := func(p int32) bool {
		part := b.partition("h", p)
		return part.LastStableOffset() < part.HighWatermark()
	}
	if !stuck(0) || !stuck(1) {
		t.Fatal("the transactions should hold both LSOs back")
	}
	b.sweepHanging(b.coords().txn)
	if !stuck(0) {
		t.Fatal("aborted on the first sighting; a second sweep must confirm")
	}
	b.sweepHanging(b.coords().txn)
	if stuck(0) {
		t.Fatal("the hanging transaction was not aborted")
	}
	if !stuck(1) {
		t.Fatal("the sweep aborted a transaction the coordinator runs")
	}
	b.sweepHanging(b.coords().txn)
	if !stuck(1) {
		t.Fatal("the sweep aborted a transaction the coordinator runs")
	}
}
