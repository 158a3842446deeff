package hostile

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// quotaRate is the byte quota the tests set: small, so a few seconds of
// traffic are far above it on any machine.
const quotaRate = 100_000

// burstWindow is what Kafka's rate lets a fresh client send before it is
// throttled: the rate is measured over at least quota.window.num-1 = 10
// samples of 1 s.
const burstWindow = 10 * time.Second

// maxAllowed is a generous upper bound on what a client held to rate may
// have sent after d: the burst, then the rate, plus half again. Throttling
// can only lower what a slow machine manages, so the bound never flakes.
func maxAllowed(rate float64, d time.Duration) float64 {
	return rate * (burstWindow + d).Seconds() * 1.5
}

// setQuota sets one quota through the admin API.
func setQuota(t *testing.T, addr string, entity kadm.ClientQuotaEntity, key string, value float64) {
	t.Helper()
	alterQuota(t, addr, entity, kadm.AlterClientQuotaOp{Key: key, Value: value})
}

// alterQuota applies one quota change through the admin API.
func alterQuota(t *testing.T, addr string, entity kadm.ClientQuotaEntity, op kadm.AlterClientQuotaOp) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := kadm.NewClient(cl).AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{
		Entity: entity, Ops: []kadm.AlterClientQuotaOp{op},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("altering %+v on %v: %v (%s)", op, entity, r.Err, r.ErrMessage)
		}
	}
}

// incompressible returns n random bytes: quotas meter bytes on the wire,
// so the tests send bytes no compression shrinks.
func incompressible(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func clientID(id string) kadm.ClientQuotaEntity {
	return kadm.ClientQuotaEntity{{Type: "client-id", Name: &id}}
}

// throttleSeen is a kgo hook recording the throttles a broker reported.
type throttleSeen struct {
	n   atomic.Int64
	max atomic.Int64 // milliseconds
}

func (h *throttleSeen) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	h.n.Add(1)
	for {
		old := h.max.Load()
		if d.Milliseconds() <= old || h.max.CompareAndSwap(old, d.Milliseconds()) {
			return
		}
	}
}

// TestQuotaProducerIsHeldToItsRate: a kgo producer limited by
// producer_byte_rate that produces as fast as it can gets throttle times
// back and has no more acknowledged than the quota allows.
func TestQuotaProducerIsHeldToItsRate(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.Addr()
	createTopic(t, plaintext(addr), "limited", 1)
	setQuota(t, addr, clientID("limited-producer"), "producer_byte_rate", quotaRate)

	seen := &throttleSeen{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID("limited-producer"),
		kgo.DefaultProduceTopic("limited"), kgo.WithHooks(seen), kgo.MaxBufferedBytes(1<<20),
		kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()),
		// Small requests: a request is metered whole, so one of 1 MiB right
		// after the burst would overshoot by a whole MiB before its throttle.
		kgo.ProducerBatchMaxBytes(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const run = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var acked atomic.Int64
	value := incompressible(16 << 10)
	start := time.Now()
	for ctx.Err() == nil {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(r *kgo.Record, err error) {
			if err == nil {
				acked.Add(int64(len(r.Value)))
			}
		})
	}
	elapsed := time.Since(start)
	got := float64(acked.Load())
	t.Logf("%.0f bytes acknowledged in %v; throttled %d times, at most %d ms", got, elapsed, seen.n.Load(), seen.max.Load())
	if limit := maxAllowed(quotaRate, elapsed); got > limit {
		t.Errorf("%.0f bytes acknowledged in %v, more than %.0f at producer_byte_rate=%d", got, elapsed, limit, quotaRate)
	}
	if got < quotaRate {
		t.Errorf("only %.0f bytes acknowledged: the burst a fresh client may send should pass", got)
	}
	if seen.n.Load() == 0 || seen.max.Load() <= 0 {
		t.Errorf("no response carried throttle_time_ms > 0")
	}
	canary(t, plaintext(addr), 20)
}

// TestQuotaConsumerIsHeldToItsRate: a consumer limited by
// consumer_byte_rate reads no more than the quota allows from a topic
// holding much more, and is told to back off.
func TestQuotaConsumerIsHeldToItsRate(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.Addr()
	createTopic(t, plaintext(addr), "big", 1)
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("big"),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	value := incompressible(16 << 10)
	var recs []*kgo.Record
	for range 256 { // 4 MiB: 40 s at the quota
		recs = append(recs, &kgo.Record{Value: value})
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	setQuota(t, addr, clientID("limited-consumer"), "consumer_byte_rate", quotaRate)

	seen := &throttleSeen{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID("limited-consumer"),
		kgo.ConsumeTopics("big"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(seen))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const run = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	start := time.Now()
	got := 0.0
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got += float64(len(r.Value)) })
	}
	elapsed := time.Since(start)
	t.Logf("%.0f bytes consumed in %v; throttled %d times, at most %d ms", got, elapsed, seen.n.Load(), seen.max.Load())
	if limit := maxAllowed(quotaRate, elapsed); got > limit {
		t.Errorf("%.0f bytes consumed in %v, more than %.0f at consumer_byte_rate=%d", got, elapsed, limit, quotaRate)
	}
	if got == 0 {
		t.Errorf("nothing consumed: the burst a fresh client may read should pass")
	}
	if seen.n.Load() == 0 {
		t.Errorf("no fetch response carried throttle_time_ms > 0")
	}
	canary(t, plaintext(addr), 20)
}

// TestQuotaClientIgnoringThrottleIsMuted: a raw client that ignores
// throttle_time_ms and pipelines produce requests as fast as the socket
// takes them gains nothing: the broker stops reading its connection for
// the throttle time (KIP-219), so what it gets acknowledged stays within
// the quota, and the broker holds none of the unread bytes.
func TestQuotaClientIgnoringThrottleIsMuted(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.Addr()
	createTopic(t, plaintext(addr), "flood", 1)
	setQuota(t, addr, clientID("raw"), "producer_byte_rate", quotaRate)
	heapBefore := heapInUse()

	c := testenv.DialRaw(t, addr)
	values := make([]string, 4)
	for i := range values {
		values[i] = string(make([]byte, 16<<10))
	}
	frame := testenv.Frame(testenv.ProduceRequest("flood", 0, testenv.Batch(values...)), 9, 7)
	const run = 3 * time.Second
	stop := time.Now().Add(run)
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for time.Now().Before(stop) {
			c.NC.SetWriteDeadline(stop)
			if _, err := c.NC.Write(frame); err != nil {
				return // the deadline: the broker stopped reading
			}
			sent.Add(1)
		}
	})
	acked, maxThrottle := 0, int32(0)
	c.NC.SetReadDeadline(stop)
	for {
		resp, err := readProduceResponse(c.NC)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			t.Fatalf("reading responses: %v", err)
		}
		for _, tp := range resp.Topics {
			for _, p := range tp.Partitions {
				if p.ErrorCode != 0 {
					t.Fatalf("produce error %d", p.ErrorCode)
				}
			}
		}
		acked++
		maxThrottle = max(maxThrottle, resp.ThrottleMillis)
	}
	wg.Wait()
	ackedBytes := float64(acked * 64 << 10)
	if limit := maxAllowed(quotaRate, run); ackedBytes > limit {
		t.Errorf("%d requests (%.0f bytes) acknowledged to a client ignoring throttles in %v, more than %.0f at producer_byte_rate=%d",
			acked, ackedBytes, run, limit, quotaRate)
	}
	if maxThrottle <= 0 {
		t.Errorf("no response carried throttle_time_ms > 0 (%d acknowledged of %d sent)", acked, sent.Load())
	}
	if grown := int64(heapInUse()) - int64(heapBefore); grown > 64<<20 {
		t.Errorf("heap grew %d MiB while the client was muted", grown>>20)
	}
	canary(t, plaintext(addr), 20)
}

// readProduceResponse reads one Produce v9 response frame.
func readProduceResponse(nc net.Conn) (*kmsg.ProduceResponse, error) {
	var size [4]byte
	if _, err := io.ReadFull(nc, size[:]); err != nil {
		return nil, err
	}
	body := make([]byte, int(size[0])<<24|int(size[1])<<16|int(size[2])<<8|int(size[3]))
	if _, err := io.ReadFull(nc, body); err != nil {
		return nil, err
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 9
	if err := resp.ReadFrom(body[5:]); err != nil { // correlation id, empty header tags
		return nil, fmt.Errorf("decoding produce response: %w", err)
	}
	return resp, nil
}

// TestQuotaRequestPercentageThrottles: a client whose request_percentage
// is tiny is throttled for its handler time, never longer than one window
// sample (Kafka's cap for request throttles).
func TestQuotaRequestPercentageThrottles(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.Addr()
	createTopic(t, plaintext(addr), "busy", 1)
	// 0.01% of a thread: 1 ms of handling over the 10 s minimum window.
	setQuota(t, addr, clientID("raw"), "request_percentage", 0.01)
	c := testenv.DialRaw(t, addr)
	batch := testenv.Batch("x")
	var throttle int32
	for i := 0; i < 5000 && throttle == 0; i++ {
		resp := c.Request(testenv.ProduceRequest("busy", 0, batch), 9).(*kmsg.ProduceResponse)
		throttle = resp.ThrottleMillis
	}
	if throttle <= 0 {
		t.Fatalf("5000 requests at request_percentage=0.01 were never throttled")
	}
	if throttle > 1000 {
		t.Errorf("request throttle %d ms, want at most one window sample (1000 ms)", throttle)
	}
	canary(t, plaintext(addr), 20)
}

// TestQuotaPrecedence walks Kafka's precedence through the broker: the
// client-id default, a specific client id over it, the user default over
// both, and (user, client-id) over everything.
func TestQuotaPrecedence(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.Addr()
	createTopic(t, plaintext(addr), "prec", 1)
	user := "ANONYMOUS"
	vip := "vip"
	const tiny, huge = 1000, 1e12 // 20 KB exceeds tiny's 10 KB burst
	batch := testenv.Batch(string(make([]byte, 20<<10)))
	throttled := func(client string) bool {
		t.Helper()
		c := testenv.DialRaw(t, addr) // a fresh, unmuted connection each time
		f := kmsg.NewRequestFormatter(kmsg.FormatterClientID(client))
		req := testenv.ProduceRequest("prec", 0, batch)
		req.SetVersion(9)
		c.Send(f.AppendRequest(nil, req, 1))
		resp := c.ReadResponse(req, 9, 1).(*kmsg.ProduceResponse)
		c.NC.Close()
		return resp.ThrottleMillis > 0
	}
	steps := []struct {
		entity kadm.ClientQuotaEntity
		value  float64
		want   map[string]bool
	}{
		{kadm.ClientQuotaEntity{{Type: "client-id"}}, tiny, map[string]bool{"a": true, vip: true}},
		{clientID(vip), huge, map[string]bool{"b": true, vip: false}},
		{kadm.ClientQuotaEntity{{Type: "user"}}, tiny, map[string]bool{vip: true}},
		{kadm.ClientQuotaEntity{{Type: "user", Name: &user}, {Type: "client-id", Name: &vip}}, huge, map[string]bool{vip: false, "c": true}},
	}
	for i, s := range steps {
		setQuota(t, addr, s.entity, "producer_byte_rate", s.value)
		for client, want := range s.want {
			if got := throttled(client); got != want {
				t.Errorf("step %d (%v=%v): client %q throttled = %v, want %v", i+1, s.entity, s.value, client, got, want)
			}
		}
	}
	// The defaults hold every client, the canary's too: lift them first.
	for _, s := range steps {
		if s.value == tiny {
			alterQuota(t, addr, s.entity, kadm.AlterClientQuotaOp{Key: "producer_byte_rate", Remove: true})
		}
	}
	canary(t, plaintext(addr), 20)
}
