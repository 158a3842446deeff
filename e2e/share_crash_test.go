package e2e

// Share groups across SIGKILL: share consumers acquire and acknowledge
// (ACCEPT, RELEASE, REJECT at random) while the broker is killed three
// times. The promise checked: no answered acknowledgement is lost (an
// accepted or rejected record is never delivered again), no record is
// delivered more than group.share.delivery.count.limit times, no delivery
// count of a record repeats and a delivery counts higher than every one
// answered before it was asked for (delivery counts are durable before
// they are handed out), and in the end every record is settled: accepted,
// rejected, or archived at the limit.

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type shareRec struct {
	p   int32
	off int64
}

// shareLedger is what the consumers saw and were answered.
//
// Workers record what they saw after their requests return, so the
// ledger's order is not the broker's: a worker may record a delivery late,
// after a restart made the record Available again and another worker got
// it with a higher count. Deliveries are therefore ordered only where the
// order is certain: an answer received before another request was sent
// came first at the broker.
type shareLedger struct {
	mu         sync.Mutex
	deliveries map[shareRec][]shareDelivery
	settled    map[shareRec]shareSettle
	maybeAcked map[shareRec]bool // ACCEPT/REJECT sent, answer lost with the broker
	// lostFetches counts ShareFetch requests without an answer: the
	// broker may have made their acquisitions durable (a delivery the
	// consumers never saw, which still counts towards the limit).
	lostFetches int
	// unordered counts pairs of deliveries of one record whose requests
	// overlapped in time, so that only their counts say which came first.
	unordered  int
	violations []string
}

// shareDelivery is one delivery of a record: its count and when the
// ShareFetch that brought it was sent and answered.
type shareDelivery struct {
	count      int16
	sent, recv time.Time
}

// shareSettle is an answered ACCEPT or REJECT.
type shareSettle struct {
	how  string
	sent time.Time // when the acknowledgement was sent
}

func (l *shareLedger) delivered(r shareRec, d shareDelivery, limit int16) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.settled[r]; ok && s.sent.Before(d.sent) {
		// The answered acknowledgement was sent before this fetch: it
		// was applied before the fetch acquired anything.
		l.violations = append(l.violations, fmt.Sprintf("%v delivered (count %d) after its %s was answered", r, d.count, s.how))
	}
	if d.count > limit {
		l.violations = append(l.violations, fmt.Sprintf("%v delivered with count %d past the limit %d", r, d.count, limit))
	}
	for _, prev := range l.deliveries[r] {
		switch {
		case prev.count == d.count:
			l.violations = append(l.violations, fmt.Sprintf("%v delivered twice with count %d", r, d.count))
		case prev.recv.Before(d.sent) && d.count < prev.count:
			l.violations = append(l.violations, fmt.Sprintf("%v delivered with count %d after count %d", r, d.count, prev.count))
		case d.recv.Before(prev.sent) && prev.count < d.count:
			l.violations = append(l.violations, fmt.Sprintf("%v delivered with count %d after count %d", r, prev.count, d.count))
		case !prev.recv.Before(d.sent) && !d.recv.Before(prev.sent):
			l.unordered++
		}
	}
	l.deliveries[r] = append(l.deliveries[r], d)
}

// maxCount is the highest delivery count r was seen with.
func (l *shareLedger) maxCount(r shareRec) int16 {
	var m int16
	for _, d := range l.deliveries[r] {
		m = max(m, d.count)
	}
	return m
}

func TestShareAcksSurviveSIGKILL(t *testing.T) {
	testenv.SkipShort(t, "SIGKILLs a broker subprocess three times")
	const (
		topic      = "queue"
		groupID    = "workers"
		partitions = 2
		total      = 3000
		limit      = 3
		workers    = 3
	)
	dir := t.TempDir()
	addr := freePort(t)
	extra := []string{"--set", fmt.Sprintf("group.share.delivery.count.limit=%d", limit)}
	p := startBroker(t, dir, addr, extra...)
	createTopic(t, addr, topic, partitions)
	produceN(t, addr, topic, total, 20)
	ends := map[int32]int64{}

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	node := cl.Broker(int(md.Brokers[0].NodeID))
	lo, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	lo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	if len(ends) != partitions || ends[0]+ends[1] != total {
		t.Fatalf("end offsets %v, want %d records over %d partitions", ends, total, partitions)
	}
	var topicID [16]byte
	for _, mt := range md.Topics {
		if mt.Topic != nil && *mt.Topic == topic {
			topicID = mt.TopicID
		}
	}
	{
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		res := kmsg.NewIncrementalAlterConfigsRequestResource()
		res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, groupID
		res.Configs = []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "share.auto.offset.reset", Value: kmsg.StringPtr("earliest")}}
		req.Resources = append(req.Resources, res)
		resp, err := req.RequestWith(ctx, node)
		if err != nil || resp.Resources[0].ErrorCode != 0 {
			t.Fatalf("setting share.auto.offset.reset: %v %v", err, resp)
		}
	}

	l := &shareLedger{deliveries: map[shareRec][]shareDelivery{}, settled: map[shareRec]shareSettle{}, maybeAcked: map[shareRec]bool{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shareWorker(ctx, node, fmt.Sprintf("worker-%d-%016x", w, rand.Uint64()), groupID, topicID, limit, rand.New(rand.NewSource(int64(w))), l, stop)
		}()
	}

	// Three SIGKILLs while they work, each after some answered progress.
	for kill := 1; kill <= 3; kill++ {
		time.Sleep(700 * time.Millisecond)
		l.mu.Lock()
		progress := len(l.settled)
		l.mu.Unlock()
		t.Logf("kill %d: %d acknowledgements answered so far", kill, progress)
		p.kill()
		p = startBroker(t, dir, addr, extra...)
	}

	// Then until every record is settled: SPSO at the end of each
	// partition.
	for {
		if ctx.Err() != nil {
			t.Fatal("records still unsettled when the test ran out of time")
		}
		if shareSettled(ctx, node, groupID, topic, ends) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
	counts := map[string]int{}
	var unseen []shareRec
	for part := int32(0); part < partitions; part++ {
		for off := int64(0); off < ends[part]; off++ {
			r := shareRec{part, off}
			switch {
			case l.settled[r].how != "":
				counts[l.settled[r].how]++
			case l.maybeAcked[r]:
				counts["acknowledged, answer lost in a crash"]++
			case l.maxCount(r) == limit:
				counts["archived at the limit"]++
			default:
				unseen = append(unseen, r)
			}
		}
	}
	// Settled without an acknowledgement and without being seen at the
	// limit: archived after deliveries whose ShareFetch answers died with
	// the broker. Each lost answer hid at most MaxRecords (20) records.
	counts["archived after a lost delivery"] = len(unseen)
	if len(unseen) > 20*l.lostFetches {
		t.Errorf("%d records settled without an acknowledgement or a delivery at the limit, more than %d lost ShareFetch answers explain: %v",
			len(unseen), l.lostFetches, unseen)
	}
	t.Logf("fates: %v (ShareFetch answers lost: %d; redeliveries ordered only by their counts: %d)", counts, l.lostFetches, l.unordered)

	// The state log check-data reads offline decodes as replay does.
	p.stop(t)
	if code, out := runExactly(t, "check-data", "--data-dir", dir); code != 0 {
		t.Fatalf("check-data exited %d:\n%s", code, out)
	}
}

// shareSettled reports whether the group's SPSO reached the end of every
// partition.
func shareSettled(ctx context.Context, node *kgo.Broker, group, topic string, ends map[int32]int64) bool {
	req := kmsg.NewPtrDescribeShareGroupOffsetsRequest()
	rg := kmsg.NewDescribeShareGroupOffsetsRequestGroup()
	rg.GroupID = group
	rt := kmsg.NewDescribeShareGroupOffsetsRequestGroupTopic()
	rt.Topic = topic
	for p := range ends {
		rt.Partitions = append(rt.Partitions, p)
	}
	rg.Topics = append(rg.Topics, rt)
	req.Groups = append(req.Groups, rg)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, node)
	if err != nil || len(resp.Groups) != 1 || len(resp.Groups[0].Topics) != 1 {
		return false
	}
	for _, rp := range resp.Groups[0].Topics[0].Partitions {
		if rp.ErrorCode != 0 || rp.StartOffset != ends[rp.Partition] {
			return false
		}
	}
	return true
}

// shareWorker is a share consumer on the wire: it joins, fetches in a
// share session and acknowledges every acquired record with ShareAcknowledge,
// starting a new session (epoch 0) after any error.
func shareWorker(ctx context.Context, node *kgo.Broker, member, group string, topicID [16]byte, limit int16, rng *rand.Rand, l *shareLedger, stop chan struct{}) {
	epoch := int32(0)
	joined := false
	memberEpoch := int32(0)
	lastHB := time.Time{}
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if !joined || time.Since(lastHB) > 2*time.Second {
			hb := kmsg.NewPtrShareGroupHeartbeatRequest()
			hb.GroupID, hb.MemberID = group, member
			hb.MemberEpoch = memberEpoch
			if !joined {
				hb.MemberEpoch = 0
				hb.SubscribedTopicNames = []string{"queue"}
			}
			resp, err := hb.RequestWith(rctx, node)
			switch {
			case err != nil:
				cancel()
				time.Sleep(50 * time.Millisecond)
				continue
			case resp.ErrorCode != 0:
				joined, epoch = false, 0
				cancel()
				continue
			}
			joined, memberEpoch, lastHB = true, resp.MemberEpoch, time.Now()
		}
		fr := kmsg.NewPtrShareFetchRequest()
		fr.GroupID, fr.MemberID, fr.ShareSessionEpoch = kmsg.StringPtr(group), kmsg.StringPtr(member), epoch
		fr.MaxWaitMillis, fr.MaxRecords, fr.MaxBytes = 200, 20, 1<<20
		ft := kmsg.NewShareFetchRequestTopic()
		ft.TopicID = topicID
		for p := range int32(2) {
			fp := kmsg.NewShareFetchRequestTopicPartition()
			fp.Partition = p
			ft.Partitions = append(ft.Partitions, fp)
		}
		if epoch == 0 {
			fr.Topics = append(fr.Topics, ft)
		}
		sent := time.Now()
		resp, err := fr.RequestWith(rctx, node)
		recv := time.Now()
		cancel()
		if err != nil {
			l.mu.Lock()
			l.lostFetches++
			l.mu.Unlock()
		}
		if err != nil || resp.ErrorCode != 0 {
			epoch = 0
			if err == nil && resp.ErrorCode == kerr.UnknownMemberID.Code {
				joined = false
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		epoch = nextShareEpoch(epoch)
		// "Processing": the kills must find records in flight.
		time.Sleep(time.Duration(rng.Intn(50)) * time.Millisecond)
		ack := kmsg.NewPtrShareAcknowledgeRequest()
		ack.GroupID, ack.MemberID = kmsg.StringPtr(group), kmsg.StringPtr(member)
		at := kmsg.NewShareAcknowledgeRequestTopic()
		at.TopicID = topicID
		pending := map[int32][]struct {
			r   shareRec
			how string
		}{}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if rp.ErrorCode != 0 || len(rp.AcquiredRecords) == 0 {
					continue
				}
				ap := kmsg.NewShareAcknowledgeRequestTopicPartition()
				ap.Partition = rp.Partition
				for _, a := range rp.AcquiredRecords {
					for off := a.FirstOffset; off <= a.LastOffset; off++ {
						r := shareRec{rp.Partition, off}
						l.delivered(r, shareDelivery{a.DeliveryCount, sent, recv}, limit)
						typ, how := int8(1), "accept"
						switch x := rng.Intn(10); {
						case x < 3:
							typ, how = 2, "release"
						case x < 4:
							typ, how = 3, "reject"
						}
						ap.AcknowledgementBatches = append(ap.AcknowledgementBatches,
							kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch{FirstOffset: off, LastOffset: off, AcknowledgeTypes: []int8{typ}})
						pending[rp.Partition] = append(pending[rp.Partition], struct {
							r   shareRec
							how string
						}{r, how})
						if how != "release" {
							l.mu.Lock()
							l.maybeAcked[r] = true
							l.mu.Unlock()
						}
					}
				}
				at.Partitions = append(at.Partitions, ap)
			}
		}
		if len(at.Partitions) == 0 {
			continue
		}
		ack.Topics = append(ack.Topics, at)
		ack.ShareSessionEpoch = epoch
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		ackSent := time.Now()
		aresp, err := ack.RequestWith(actx, node)
		acancel()
		if err != nil || aresp.ErrorCode != 0 {
			epoch = 0
			continue
		}
		epoch = nextShareEpoch(epoch)
		l.mu.Lock()
		for _, rt := range aresp.Topics {
			for _, rp := range rt.Partitions {
				if rp.ErrorCode != 0 {
					continue
				}
				for _, pr := range pending[rp.Partition] {
					if pr.how != "release" {
						l.settled[pr.r] = shareSettle{pr.how, ackSent}
					}
				}
			}
		}
		l.mu.Unlock()
	}
}

func nextShareEpoch(e int32) int32 {
	if e == 1<<31-1 {
		return 1
	}
	return e + 1
}
