package hostile

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestStateShareGroups: share-group requests built to cost the broker
// memory or time are bounded — a session flood stops at
// group.share.max.share.sessions, acknowledgement batches claiming the
// whole offset space cost at most the window, a fetch asking for MaxInt32
// records locks at most group.share.partition.max.record.locks, and the
// share group limit holds — and a normal client is served afterwards.
func TestStateShareGroups(t *testing.T) {
	b := startBroker(t, map[string]string{
		"group.share.max.share.sessions":         "5",
		"group.share.partition.max.record.locks": "100",
		"group.share.max.groups":                 "2",
	})
	tg := plaintext(b.Addr())
	createTopic(t, tg, "q", 1)
	adm := adminClient(t, tg)
	td, err := adm.ListTopics(t.Context(), "q")
	if err != nil {
		t.Fatal(err)
	}
	id := td["q"].ID
	c := tg.dial(t)
	vals := make([]string, 300)
	for i := range vals {
		vals[i] = "v"
	}
	pr := c.Request(testenv.ProduceRequest("q", 0, testenv.Batch(vals...)), 9).(*kmsg.ProduceResponse)
	if code := pr.Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	set := func(group string) {
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		res := kmsg.NewIncrementalAlterConfigsRequestResource()
		res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
		res.Configs = []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "share.auto.offset.reset", Value: kmsg.StringPtr("earliest")}}
		req.Resources = append(req.Resources, res)
		if r := c.Request(req, 1).(*kmsg.IncrementalAlterConfigsResponse); r.Resources[0].ErrorCode != 0 {
			t.Fatal(kerr.ErrorForCode(r.Resources[0].ErrorCode))
		}
	}
	set("g")
	hb := func(group string) int16 {
		req := kmsg.NewPtrShareGroupHeartbeatRequest()
		req.GroupID, req.MemberID, req.SubscribedTopicNames = group, "member-"+group, []string{"q"}
		return c.Request(req, 1).(*kmsg.ShareGroupHeartbeatResponse).ErrorCode
	}
	if code := hb("g"); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	fetch := func(member string, epoch int32) *kmsg.ShareFetchResponse {
		req := kmsg.NewPtrShareFetchRequest()
		req.GroupID, req.MemberID, req.ShareSessionEpoch = kmsg.StringPtr("g"), kmsg.StringPtr(member), epoch
		req.MaxRecords, req.MaxBytes = math.MaxInt32, math.MaxInt32
		rt := kmsg.NewShareFetchRequestTopic()
		rt.TopicID = id
		rt.Partitions = []kmsg.ShareFetchRequestTopicPartition{{Partition: 0}}
		req.Topics = append(req.Topics, rt)
		return c.Request(req, 2).(*kmsg.ShareFetchResponse)
	}
	first := fetch("greedy", 0)
	if first.ErrorCode != 0 {
		t.Fatal(kerr.ErrorForCode(first.ErrorCode))
	}
	locked := int64(0)
	for _, a := range first.Topics[0].Partitions[0].AcquiredRecords {
		locked += a.LastOffset - a.FirstOffset + 1
	}
	if locked != 100 {
		t.Fatalf("a MaxInt32-record fetch locked %d records, want group.share.partition.max.record.locks=100", locked)
	}

	// One batch claiming every offset, and a thousand of them.
	ack := kmsg.NewPtrShareAcknowledgeRequest()
	ack.GroupID, ack.MemberID, ack.ShareSessionEpoch = kmsg.StringPtr("g"), kmsg.StringPtr("greedy"), 1
	at := kmsg.NewShareAcknowledgeRequestTopic()
	at.TopicID = id
	ap := kmsg.NewShareAcknowledgeRequestTopicPartition()
	for range 1000 {
		ap.AcknowledgementBatches = append(ap.AcknowledgementBatches,
			kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch{FirstOffset: 0, LastOffset: math.MaxInt64, AcknowledgeTypes: []int8{0}})
	}
	at.Partitions = append(at.Partitions, ap)
	ack.Topics = append(ack.Topics, at)
	start := time.Now()
	ar := c.Request(ack, 2).(*kmsg.ShareAcknowledgeResponse)
	if ar.ErrorCode != 0 {
		t.Fatalf("gap acknowledgements: %v", kerr.ErrorForCode(ar.ErrorCode))
	}
	t.Logf("1000 gap batches over [0, 2^63) answered in %v", time.Since(start))

	// Session flood: the sixth member's session is refused.
	for i := range 4 {
		if r := fetch(fmt.Sprint("m", i), 0); r.ErrorCode != 0 {
			t.Fatalf("session %d: %v", i, kerr.ErrorForCode(r.ErrorCode))
		}
	}
	if r := fetch("one-too-many", 0); r.ErrorCode != kerr.ShareSessionLimitReached.Code {
		t.Fatalf("session past the limit: %v, want SHARE_SESSION_LIMIT_REACHED", kerr.ErrorForCode(r.ErrorCode))
	}

	// Group flood: the third share group is refused.
	if code := hb("g2"); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	if code := hb("g3"); code != kerr.GroupMaxSizeReached.Code {
		t.Fatalf("share group past group.share.max.groups: %v", kerr.ErrorForCode(code))
	}
	listed, err := adm.ListGroupsByType(t.Context(), []string{"share"})
	if err != nil {
		t.Fatal(err)
	}
	if got := listed.Groups(); len(got) != 2 {
		t.Fatalf("share groups %v, want g and g2", got)
	}
	canary(t, tg, 20)
}
