package exactly_test

// Transactions end to end with real clients: franz-go (kgo) transactional
// producers, raw kmsg requests for the cases a well-behaved client never
// produces (late requests from an earlier transaction), and kcat
// (librdkafka).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

func txnClient(t *testing.T, addr, txnID string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.TransactionalID(txnID),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
}

// readTopic reads every partition to its end for the isolation level (the
// LSO for read_committed) and returns the values in partition and offset
// order.
func readTopic(t *testing.T, addr, topic string, committed bool) []string {
	t.Helper()
	var out []string
	for _, r := range testenv.Flatten(testenv.ReadToEnd(t, addr, topic, committed)) {
		out = append(out, string(r.Value))
	}
	return out
}

func count(vals []string, prefix string) int {
	n := 0
	for _, v := range vals {
		if strings.HasPrefix(v, prefix) {
			n++
		}
	}
	return n
}

func produceTxn(t *testing.T, cl *kgo.Client, topic, prefix string, n int, commit bool) {
	t.Helper()
	ctx := context.Background()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%s%d", prefix, i)}).FirstErr(); err != nil {
			t.Fatalf("produce %s%d: %v", prefix, i, err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("end transaction (commit=%v): %v", commit, err)
	}
}

// TestTxnCommitAndAbortVisibility: read_committed readers see committed
// transactions whole and aborted ones never; read_uncommitted readers see
// both; nothing is left open.
func TestTxnCommitAndAbortVisibility(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "vis", 3)
	cl := txnClient(t, b.Addr(), "vis-producer")
	produceTxn(t, cl, "vis", "c1-", 30, true)
	produceTxn(t, cl, "vis", "a-", 30, false)
	produceTxn(t, cl, "vis", "c2-", 9, true)

	committed := readTopic(t, b.Addr(), "vis", true)
	if got := len(committed); got != 39 || count(committed, "a-") != 0 {
		t.Fatalf("read_committed got %d records (%d aborted), want the 39 committed", got, count(committed, "a-"))
	}
	all := readTopic(t, b.Addr(), "vis", false)
	if len(all) != 69 {
		t.Fatalf("read_uncommitted got %d records, want 69", len(all))
	}
	testenv.StableEnds(t, b.Addr(), "vis")
}

// TestTxnZombieFenced: a second producer with the same transactional id
// fences the first: the first's open transaction is aborted and it can
// neither produce nor commit any more.
func TestTxnZombieFenced(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "zombie", 2)
	ctx := context.Background()
	old := txnClient(t, b.Addr(), "zid")
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, &kgo.Record{Topic: "zombie", Value: []byte("zombie-0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	fresh := txnClient(t, b.Addr(), "zid")
	produceTxn(t, fresh, "zombie", "fresh-", 4, true)

	err := old.ProduceSync(ctx, &kgo.Record{Topic: "zombie", Value: []byte("zombie-1")}).FirstErr()
	if err == nil {
		err = old.EndTransaction(ctx, kgo.TryCommit)
	}
	if err == nil {
		t.Fatal("the fenced producer produced and committed")
	}
	if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) && !errors.Is(err, kerr.OperationNotAttempted) {
		t.Logf("fenced producer got %v", err)
	}
	got := readTopic(t, b.Addr(), "zombie", true)
	if count(got, "zombie-") != 0 || count(got, "fresh-") != 4 {
		t.Fatalf("read_committed %v: want only the 4 fresh records", got)
	}
	testenv.StableEnds(t, b.Addr(), "zombie")
}

// TestTxnTimeoutAborts: a transaction left open past its timeout is
// aborted by the coordinator; its records never become visible, the LSO
// moves on, and the producer recovers for its next transaction.
func TestTxnTimeoutAborts(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "slow", 1)
	ctx := context.Background()
	cl := txnClient(t, b.Addr(), "slow-producer", kgo.TransactionTimeout(time.Second))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "slow", Value: []byte("late-0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		time.Sleep(200 * time.Millisecond)
		if st := describeTxn(t, b.Addr(), "slow-producer"); st.State == "CompleteAbort" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("transaction not aborted on timeout: %s", st.State)
		}
	}
	testenv.StableEnds(t, b.Addr(), "slow")
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("commit of a timed-out transaction succeeded")
	}
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Logf("abort after timeout: %v", err)
	}
	produceTxn(t, cl, "slow", "next-", 3, true)
	got := readTopic(t, b.Addr(), "slow", true)
	if count(got, "late-") != 0 || count(got, "next-") != 3 {
		t.Fatalf("read_committed %v: want only the 3 records of the next transaction", got)
	}
}

func describeTxn(t *testing.T, addr, id string) kmsg.DescribeTransactionsResponseTransactionState {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeTransactionsRequest()
	req.TransactionalIDs = []string{id}
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.TransactionStates[0]
}

// rawClient sends hand-built requests: AddPartitionsToTxn capped at v3 (the
// single-transaction shape clients send), everything else at the broker's
// maximum.
func rawClient(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.AddPartitionsToTxn), 3)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.MaxVersions(v))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func initPID(t *testing.T, cl *kgo.Client, id string) (int64, int16, int16) {
	t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = 60000
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode
}

func addPartition(t *testing.T, cl *kgo.Client, id string, pid int64, epoch int16, topic string, p int32) int16 {
	t.Helper()
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch = id, pid, epoch
	rt := kmsg.NewAddPartitionsToTxnRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{p}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func endTxn(t *testing.T, cl *kgo.Client, id string, pid int64, epoch int16, commit bool) *kmsg.EndTxnResponse {
	t.Helper()
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit = id, pid, epoch, commit
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// txnBatch builds a transactional RecordBatch v2 of one record.
func txnBatch(pid int64, epoch int16, seq int32, value string) []byte {
	var rec []byte
	rec = append(rec, 0)              // attributes
	rec = binary.AppendVarint(rec, 0) // timestamp delta
	rec = binary.AppendVarint(rec, 0) // offset delta
	rec = binary.AppendVarint(rec, -1)
	rec = binary.AppendVarint(rec, int64(len(value)))
	rec = append(rec, value...)
	rec = binary.AppendVarint(rec, 0)
	b := make([]byte, 61)
	b = binary.AppendVarint(b, int64(len(rec)))
	b = append(b, rec...)
	be := binary.BigEndian
	now := uint64(time.Now().UnixMilli())
	be.PutUint32(b[8:], uint32(len(b)-12))
	b[16] = 2
	be.PutUint16(b[21:], 0x10) // transactional
	be.PutUint64(b[27:], now)
	be.PutUint64(b[35:], now)
	be.PutUint64(b[43:], uint64(pid))
	be.PutUint16(b[51:], uint16(epoch))
	be.PutUint32(b[53:], uint32(seq))
	be.PutUint32(b[57:], 1)
	be.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func produceRaw(t *testing.T, cl *kgo.Client, id, topic string, p int32, batch []byte) int16 {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.TransactionID = &id
	req.Acks = -1
	req.TimeoutMillis = 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = p, batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	var w int16
	if want != nil {
		w = want.Code
	}
	if got != w {
		t.Fatalf("%s: got %v, want %v", what, kerr.ErrorForCode(got), want)
	}
}

// TestTxnLateRequestsRejected is the late-request regression: an EndTxn
// (commit) and a produce from transaction N, delayed until transaction N+1
// has begun, must be rejected and change nothing. With KIP-890 v2 (EndTxn
// v5) every end bumps the epoch, so both carry a stale epoch.
func TestTxnLateRequestsRejected(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "late", 1)
	cl, late := rawClient(t, b.Addr()), rawClient(t, b.Addr())
	const id = "late-txn"
	pid, epoch, code := initPID(t, cl, id)
	wantCode(t, "init", code, nil)

	// Transaction 1 commits one record; the end bumps the epoch.
	wantCode(t, "add 1", addPartition(t, cl, id, pid, epoch, "late", 0), nil)
	wantCode(t, "produce 1", produceRaw(t, cl, id, "late", 0, txnBatch(pid, epoch, 0, "txn1")), nil)
	end := endTxn(t, cl, id, pid, epoch, true)
	wantCode(t, "commit 1", end.ErrorCode, nil)
	if end.Version < 5 || end.ProducerID != pid || end.ProducerEpoch != epoch+1 {
		t.Fatalf("EndTxn v%d answered producer %d epoch %d, want %d epoch %d", end.Version, end.ProducerID, end.ProducerEpoch, pid, epoch+1)
	}
	next := end.ProducerEpoch

	// Transaction 2 begins.
	wantCode(t, "add 2", addPartition(t, cl, id, pid, next, "late", 0), nil)
	wantCode(t, "produce 2", produceRaw(t, cl, id, "late", 0, txnBatch(pid, next, 0, "txn2")), nil)

	// The delayed requests of transaction 1 arrive on another connection.
	wantCode(t, "late commit", endTxn(t, late, id, pid, epoch, true).ErrorCode, kerr.ProducerFenced)
	if c := produceRaw(t, late, id, "late", 0, txnBatch(pid, epoch, 1, "late-write")); c == 0 {
		t.Fatal("a produce from the previous epoch was accepted")
	}
	st := describeTxn(t, b.Addr(), id)
	if st.State != "Ongoing" || st.ProducerEpoch != next {
		t.Fatalf("after the late requests: %s at epoch %d, want Ongoing at %d", st.State, st.ProducerEpoch, next)
	}

	// Transaction 2 aborts: only transaction 1 is visible, the late write nowhere.
	wantCode(t, "abort 2", endTxn(t, cl, id, pid, next, false).ErrorCode, nil)
	if got := readTopic(t, b.Addr(), "late", true); len(got) != 1 || got[0] != "txn1" {
		t.Fatalf("read_committed %v, want [txn1]", got)
	}
	if got := readTopic(t, b.Addr(), "late", false); count(got, "late-write") != 0 {
		t.Fatalf("read_uncommitted %v holds the late write", got)
	}
	testenv.StableEnds(t, b.Addr(), "late")
}

// TestTxnConcurrentTransactions: while the coordinator aborts a running
// transaction because a new producer instance took over, that instance is
// told CONCURRENT_TRANSACTIONS and retries; the old epoch is fenced.
func TestTxnConcurrentTransactions(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "conc", 1)
	cl := rawClient(t, b.Addr())
	const id = "conc-txn"
	pid, epoch, code := initPID(t, cl, id)
	wantCode(t, "init", code, nil)
	wantCode(t, "add", addPartition(t, cl, id, pid, epoch, "conc", 0), nil)
	wantCode(t, "produce", produceRaw(t, cl, id, "conc", 0, txnBatch(pid, epoch, 0, "open")), nil)

	_, _, code = initPID(t, cl, id)
	wantCode(t, "takeover", code, kerr.ConcurrentTransactions)
	var newEpoch int16
	for i := 0; ; i++ {
		var p int64
		p, newEpoch, code = initPID(t, cl, id)
		if code == 0 {
			if p != pid {
				t.Fatalf("takeover moved to producer %d", p)
			}
			break
		}
		if code != kerr.ConcurrentTransactions.Code || i > 100 {
			t.Fatalf("takeover retry: %v", kerr.ErrorForCode(code))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if newEpoch != epoch+2 {
		t.Fatalf("epoch after takeover %d, want %d (fence + new instance)", newEpoch, epoch+2)
	}
	wantCode(t, "add at the fenced epoch", addPartition(t, cl, id, pid, epoch, "conc", 0), kerr.ProducerFenced)
	if got := readTopic(t, b.Addr(), "conc", true); len(got) != 0 {
		t.Fatalf("read_committed %v: the fenced transaction must be aborted", got)
	}
	testenv.StableEnds(t, b.Addr(), "conc")
}

// TestTxnKcat: librdkafka (kcat) with a transactional id commits at the end
// of its input; read_committed readers see every line.
func TestTxnKcat(t *testing.T) {
	t.Parallel() // owns its broker
	kcat := kcatPath(t)
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "kc", 2)
	cmd := exec.Command(kcat, "-P", "-b", b.Addr(), "-t", "kc", "-X", "transactional.id=kcat-txn")
	cmd.Stdin = strings.NewReader("one\ntwo\nthree\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out.String())
	}
	got := readTopic(t, b.Addr(), "kc", true)
	if len(got) != 3 {
		t.Fatalf("read_committed %v, want the 3 lines (kcat output: %s)", got, out.String())
	}
	if st := describeTxn(t, b.Addr(), "kcat-txn"); st.State != "CompleteCommit" {
		t.Fatalf("kcat's transaction is %s, want CompleteCommit", st.State)
	}
	testenv.StableEnds(t, b.Addr(), "kc")
}

// TestTxnKcatInterrupted: kcat (librdkafka) is interrupted with SIGINT in
// the middle of a transactional produce. It aborts its transaction and
// exits non-zero; its records, already written to the partition, are never
// visible to read_committed readers (kcat's own or kgo's), are to
// read_uncommitted ones, the transaction ends CompleteAbort (the 3s
// transaction timeout would abort it too, had kcat not), the partition's
// LSO moves on and a later kcat transaction is readable.
func TestTxnKcatInterrupted(t *testing.T) {
	t.Parallel() // owns its broker
	kcat := kcatPath(t)
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "intr", 1)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kcat, "-P", "-b", b.Addr(), "-t", "intr",
		"-X", "transactional.id=kcat-intr", "-X", "transaction.timeout.ms=3000")
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	defer pw.Close()
	// kcat reads its input in large blocks: give it enough lines that
	// it produces some before the signal, and keep the pipe open.
	go func() {
		var buf bytes.Buffer
		for i := range 100000 {
			fmt.Fprintf(&buf, "open-%d\n", i)
		}
		pw.Write(buf.Bytes())
	}()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ends, err := adm.ListEndOffsets(context.Background(), "intr")
		if err == nil {
			if o, ok := ends.Lookup("intr", 0); ok && o.Offset > 1000 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kcat produced nothing within 30s: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	// kcat aborts on SIGINT and usually exits non-zero; when its abort
	// completes at once it may exit 0, but it says so. Either way it must
	// not have committed: the broker-side checks below are the point.
	if err := cmd.Wait(); err == nil && !strings.Contains(out.String(), "Aborting transaction due to termination signal") {
		t.Fatalf("kcat exited 0 after SIGINT without aborting; output: %s", out.String())
	}
	if st := describeTxn(t, b.Addr(), "kcat-intr"); st.State != "Ongoing" && st.State != "PrepareAbort" && st.State != "CompleteAbort" {
		t.Fatalf("interrupted kcat's transaction is %s", st.State)
	}
	if got := readTopic(t, b.Addr(), "intr", true); len(got) != 0 {
		t.Fatalf("read_committed saw %d records of the interrupted transaction", len(got))
	}
	deadline = time.Now().Add(30 * time.Second)
	for describeTxn(t, b.Addr(), "kcat-intr").State != "CompleteAbort" {
		if time.Now().After(deadline) {
			t.Fatal("the interrupted transaction was not aborted within 30s (its timeout is 3s)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := exec.Command(kcat, "-P", "-b", b.Addr(), "-t", "intr", "-X", "transactional.id=kcat-after")
	after.Stdin = strings.NewReader("after-1\nafter-2\n")
	if o, err := after.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce after the abort: %v\n%s", err, o)
	}
	rc := readTopic(t, b.Addr(), "intr", true)
	if count(rc, "open-") != 0 || count(rc, "after-") != 2 {
		t.Fatalf("read_committed after the abort: %d open-, %d after- (want 0 and 2)", count(rc, "open-"), count(rc, "after-"))
	}
	kc, err := exec.Command(kcat, "-C", "-b", b.Addr(), "-t", "intr", "-e", "-q",
		"-X", "isolation.level=read_committed", "-f", "%s\n").Output()
	if err != nil {
		t.Fatalf("kcat consume: %v", err)
	}
	if lines := strings.Fields(string(kc)); len(lines) != 2 || lines[0] != "after-1" || lines[1] != "after-2" {
		t.Fatalf("read_committed kcat saw %d lines, want only after-1 and after-2", len(lines))
	}
	if ru := readTopic(t, b.Addr(), "intr", false); count(ru, "open-") == 0 {
		t.Fatal("read_uncommitted should see the interrupted transaction's records")
	}
	testenv.StableEnds(t, b.Addr(), "intr")
}

// kcatPath finds kcat (./test.sh installs it): its absence fails the test,
// and -short skips the kcat tests.
func kcatPath(t *testing.T) string {
	t.Helper()
	testenv.SkipShort(t, "kcat test")
	testenv.RequireTool(t, "kcat", "apt-get install -y kcat")
	kcat, _ := exec.LookPath("kcat")
	return kcat
}

// TestTxnKcatIsolation: librdkafka as the reader. Records of an aborted
// transaction never reach a read_committed kcat consumer and do reach a
// read_uncommitted one; both see offsets strictly increasing, and the
// committed transactions (one written by kcat itself) whole.
func TestTxnKcatIsolation(t *testing.T) {
	t.Parallel() // owns its broker
	kcat := kcatPath(t)
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "iso", 1)
	cl := txnClient(t, b.Addr(), "iso-kgo")
	produceTxn(t, cl, "iso", "committed-", 3, true)
	produceTxn(t, cl, "iso", "aborted-", 4, false)
	cmd := exec.Command(kcat, "-P", "-b", b.Addr(), "-t", "iso", "-X", "transactional.id=iso-kcat")
	cmd.Stdin = strings.NewReader("kcat-1\nkcat-2\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}
	read := func(iso string) (vals []string) {
		out, err := exec.Command(kcat, "-C", "-b", b.Addr(), "-t", "iso", "-e", "-q",
			"-X", "isolation.level="+iso, "-f", "%o %s\n").Output()
		if err != nil {
			t.Fatalf("kcat consume (%s): %v", iso, err)
		}
		last := int64(-1)
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var off int64
			var v string
			if _, err := fmt.Sscanf(line, "%d %s", &off, &v); err != nil {
				t.Fatalf("kcat line %q: %v", line, err)
			}
			if off <= last {
				t.Fatalf("%s: offset %d after %d", iso, off, last)
			}
			last = off
			vals = append(vals, v)
		}
		return vals
	}
	rc := read("read_committed")
	if count(rc, "aborted-") != 0 || count(rc, "committed-") != 3 || count(rc, "kcat-") != 2 {
		t.Fatalf("read_committed kcat saw %v", rc)
	}
	ru := read("read_uncommitted")
	if count(ru, "aborted-") != 4 || count(ru, "committed-") != 3 || count(ru, "kcat-") != 2 {
		t.Fatalf("read_uncommitted kcat saw %v", ru)
	}
}

// TestTxnGroupTransactSession is the read-process-write loop (Kafka Streams
// style) with kgo's GroupTransactSession: offsets are committed inside the
// producer's transaction (TxnOffsetCommit, KIP-447 member checks), so after
// aborted and committed rounds the output holds every input exactly once
// and the group's offsets sit at the input's end.
func TestTxnGroupTransactSession(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "etl-in", 2)
	createTopic(t, b.Addr(), "etl-out", 2)
	ctx := context.Background()
	src, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("etl-in"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const n = 200
	for i := 0; i < n; i++ {
		src.Produce(ctx, &kgo.Record{Value: fmt.Appendf(nil, "%d", i)}, nil)
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(b.Addr()), kgo.TransactionalID("etl-1"),
		kgo.ConsumerGroup("etl"), kgo.ConsumeTopics("etl-in"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(), kgo.DefaultProduceTopic("etl-out"), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	done, rounds := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for done < n {
		if time.Now().After(deadline) {
			t.Fatalf("processed %d of %d records in time", done, n)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := sess.PollFetches(pctx)
		cancel()
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("fetch: %v", err)
			}
		})
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			sess.Produce(ctx, &kgo.Record{Value: append([]byte("out-"), r.Value...)}, func(_ *kgo.Record, err error) {
				if err != nil {
					t.Errorf("produce: %v", err)
				}
			})
		})
		rounds++
		// Every third round aborts: its input must come back and its
		// output must never be seen.
		commit := kgo.TransactionEndTry(rounds%3 != 0)
		committed, err := sess.End(ctx, commit)
		if err != nil {
			t.Fatalf("end round %d: %v", rounds, err)
		}
		if committed {
			done += fs.NumRecords()
		}
	}
	out := readTopic(t, b.Addr(), "etl-out", true)
	seen := map[string]int{}
	for _, v := range out {
		seen[v]++
	}
	for i := 0; i < n; i++ {
		if c := seen[fmt.Sprintf("out-%d", i)]; c != 1 {
			t.Fatalf("input %d is in the output %d times, want exactly once (%d output records)", i, c, len(out))
		}
	}
	adm := kadm.NewClient(src)
	offs, err := adm.FetchOffsets(ctx, "etl")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, "etl-in")
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		if o, _ := offs.Lookup("etl-in", e.Partition); o.At != e.Offset {
			t.Errorf("group offset of etl-in/%d is %d, want the end %d", e.Partition, o.At, e.Offset)
		}
	})
	testenv.StableEnds(t, b.Addr(), "etl-out")
}

func txnOffsetCommit(t *testing.T, cl *kgo.Client, id string, pid int64, epoch int16, grp, member string, gen int32, topic string, offset int64) int16 {
	t.Helper()
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = id, grp, pid, epoch
	req.MemberID, req.Generation = member, gen
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = 0, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

// TestTxnOffsetCommitChecks: a transactional offset commit is refused when
// its group was not added to the transaction (clients before KIP-890 v2
// add it with AddOffsetsToTxn; a late commit from an ended transaction
// finds it gone), and when the committing member is a zombie from an older
// generation of the group (KIP-447). Offsets of an aborted transaction
// never become the group's.
func TestTxnOffsetCommitChecks(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "src", 1)
	ctx := context.Background()
	// A live member gives the group a generation.
	member, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumerGroup("g447"), kgo.ConsumeTopics("src"))
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	var memberID string
	var gen int32
	for deadline := time.Now().Add(20 * time.Second); ; {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		member.PollFetches(pctx)
		cancel()
		if memberID, gen = member.GroupMetadata(); gen > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer never joined its group")
		}
	}

	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.AddPartitionsToTxn), 3)
	// A client before KIP-890 v2: explicit AddOffsetsToTxn, no epoch bump at
	// the end, so only verification can refuse a late commit.
	v.SetMaxKeyVersion(int16(kmsg.TxnOffsetCommit), 4)
	v.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.MaxVersions(v))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const id = "offsets-txn"
	pid, epoch, code := initPID(t, cl, id)
	wantCode(t, "init", code, nil)
	wantCode(t, "commit before AddOffsetsToTxn", txnOffsetCommit(t, cl, id, pid, epoch, "g447", memberID, gen, "src", 5), kerr.InvalidTxnState)

	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = id, pid, epoch, "g447"
	aresp, err := add.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "AddOffsetsToTxn", aresp.ErrorCode, nil)
	wantCode(t, "zombie generation", txnOffsetCommit(t, cl, id, pid, epoch, "g447", memberID, gen-1, "src", 5), kerr.IllegalGeneration)
	wantCode(t, "unknown member", txnOffsetCommit(t, cl, id, pid, epoch, "g447", "ghost", gen, "src", 5), kerr.UnknownMemberID)
	wantCode(t, "stale producer epoch", txnOffsetCommit(t, cl, id, pid, epoch-1, "g447", memberID, gen, "src", 5), kerr.ProducerFenced)
	wantCode(t, "current member", txnOffsetCommit(t, cl, id, pid, epoch, "g447", memberID, gen, "src", 5), nil)
	wantCode(t, "abort", endTxn(t, cl, id, pid, epoch, false).ErrorCode, nil)

	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, "g447")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("src", 0); ok && o.At == 5 {
		t.Fatal("the offset committed in an aborted transaction became the group's")
	}
	// The transaction ended: a late commit under it is refused.
	wantCode(t, "late commit", txnOffsetCommit(t, cl, id, pid, epoch, "g447", memberID, gen, "src", 5), kerr.InvalidTxnState)
}

// TestTxnMetrics: the coordinator reports ends by result and who ended
// them.
func TestTxnMetrics(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t, exactly.Options{MetricsListen: "127.0.0.1:0"})
	createTopic(t, b.Addr(), "m", 1)
	cl := txnClient(t, b.Addr(), "metered")
	produceTxn(t, cl, "m", "c", 1, true)
	produceTxn(t, cl, "m", "a", 1, false)
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`kafka_coordinator_transaction_completed_total{by="client",result="commit"} 1`,
		`kafka_coordinator_transaction_completed_total{by="client",result="abort"} 1`,
		`kafka_coordinator_end_txn_seconds_count{result="commit"} 1`,
		`kafka_coordinator_transaction_markers_seconds_count{result="abort"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestTxnAddPartitionsBatchedVerify: AddPartitionsToTxn v4+ carries several
// transactions; verify-only entries report partitions outside the running
// transaction and add nothing, the others add; unknown partitions fail
// their transaction without touching the rest.
func TestTxnAddPartitionsBatchedVerify(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "bv", 2)
	cl := rawClient(t, b.Addr())
	pidA, epochA, _ := initPID(t, cl, "bv-a")
	pidB, epochB, _ := initPID(t, cl, "bv-b")
	wantCode(t, "add a", addPartition(t, cl, "bv-a", pidA, epochA, "bv", 0), nil)

	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.Version = 5
	tx := func(id string, pid int64, epoch int16, verify bool, topic string, parts ...int32) {
		x := kmsg.NewAddPartitionsToTxnRequestTransaction()
		x.TransactionalID, x.ProducerID, x.ProducerEpoch, x.VerifyOnly = id, pid, epoch, verify
		tt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
		tt.Topic, tt.Partitions = topic, parts
		x.Topics = append(x.Topics, tt)
		req.Transactions = append(req.Transactions, x)
	}
	tx("bv-a", pidA, epochA, true, "bv", 0, 1) // 0 is in, 1 is not
	tx("bv-b", pidB, epochB, false, "bv", 1)   // adds
	tx("bv-c", 12345, 0, false, "nope", 0)     // unknown topic
	v := kversion.Stable()
	cl5, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.MaxVersions(v))
	if err != nil {
		t.Fatal(err)
	}
	defer cl5.Close()
	resp, err := req.RequestWith(context.Background(), cl5)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int16{}
	for _, x := range resp.Transactions {
		for _, tt := range x.Topics {
			for _, p := range tt.Partitions {
				got[fmt.Sprintf("%s %s/%d", x.TransactionalID, tt.Topic, p.Partition)] = p.ErrorCode
			}
		}
	}
	for k, want := range map[string]*kerr.Error{
		"bv-a bv/0":   nil,
		"bv-a bv/1":   kerr.TransactionAbortable,
		"bv-b bv/1":   nil,
		"bv-c nope/0": kerr.UnknownTopicOrPartition,
	} {
		wantCode(t, k, got[k], want)
	}
	if st := describeTxn(t, b.Addr(), "bv-a"); len(st.Topics) != 1 || len(st.Topics[0].Partitions) != 1 {
		t.Fatalf("verify-only added partitions: %+v", st.Topics)
	}
	if st := describeTxn(t, b.Addr(), "bv-b"); st.State != "Ongoing" {
		t.Fatalf("bv-b is %s after its add, want Ongoing", st.State)
	}
}

// TestTxnTimeoutAboveMax: a transaction timeout above
// transaction.max.timeout.ms is refused at InitProducerId.
func TestTxnTimeoutAboveMax(t *testing.T) {
	t.Parallel() // owns its broker
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{"transaction.max.timeout.ms": "5000"}})
	createTopic(t, b.Addr(), "tmax", 1)
	cl := txnClient(t, b.Addr(), "too-long", kgo.TransactionTimeout(10*time.Second))
	// kgo initializes the producer id in BeginTransaction or at the first
	// produce; either must fail.
	err := cl.BeginTransaction()
	if err == nil {
		err = cl.ProduceSync(context.Background(), &kgo.Record{Topic: "tmax", Value: []byte("x")}).FirstErr()
	}
	if err == nil || !strings.Contains(err.Error(), kerr.InvalidTransactionTimeout.Message) {
		t.Fatalf("produce with a 10s transaction timeout (max 5s): %v, want INVALID_TRANSACTION_TIMEOUT", err)
	}
	ok := txnClient(t, b.Addr(), "short-enough", kgo.TransactionTimeout(5*time.Second))
	produceTxn(t, ok, "tmax", "x", 1, true)
}
