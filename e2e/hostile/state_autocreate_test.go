package hostile

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// autoCreateConfig shortens the creation budget so the test sees its end.
var autoCreateConfig = map[string]string{"auto.create.topics.max.per.minute": "15", "num.partitions": "2"}

// autoCreateAttackTopics is how many distinct missing topics
// attackAutoCreateFlood asks for.
const autoCreateAttackTopics = 200

// attackAutoCreateFlood asks for the metadata of many missing topics with
// auto-creation allowed: one request naming 50, then one request each.
// It returns how many topics the broker said exist.
func attackAutoCreateFlood(t *testing.T, tg target) (created int) {
	c := tg.dial(t)
	ask := func(names ...string) {
		req := kmsg.NewPtrMetadataRequest()
		req.AllowAutoTopicCreation = true
		for _, n := range names {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(n)
			req.Topics = append(req.Topics, rt)
		}
		resp := c.Request(req, 12).(*kmsg.MetadataResponse)
		for _, rt := range resp.Topics {
			switch rt.ErrorCode {
			case 0:
				created++
			case kerr.UnknownTopicOrPartition.Code:
			default:
				t.Errorf("topic %s: %v", *rt.Topic, kerr.ErrorForCode(rt.ErrorCode))
			}
		}
	}
	var batch []string
	for i := range 50 {
		batch = append(batch, fmt.Sprintf("flood-batch-%d", i))
	}
	ask(batch...)
	for i := range autoCreateAttackTopics - 50 {
		ask(fmt.Sprintf("flood-%d", i))
	}
	return created
}

// Metadata for hundreds of missing topics creates at most the per-minute
// budget (and at most maxAutoCreatePerRequest from one request), each with
// num.partitions partitions; the rest are UNKNOWN_TOPIC_OR_PARTITION.
// Before the fix all 200 topics were created.
func TestStateAutoCreateFlood(t *testing.T) {
	b := startBroker(t, autoCreateConfig)
	created := attackAutoCreateFlood(t, plaintext(b.Addr()))
	topics, err := adminClient(t, plaintext(b.Addr())).ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	flood, fromBatch := 0, 0
	for name, td := range topics {
		if !strings.HasPrefix(name, "flood-") {
			continue
		}
		flood++
		if strings.HasPrefix(name, "flood-batch-") {
			fromBatch++
		}
		if len(td.Partitions) != 2 {
			t.Errorf("%s has %d partitions, want num.partitions=2", name, len(td.Partitions))
		}
	}
	if flood > 15 || created > 15 {
		t.Errorf("%d topics exist (%d reported created) after asking for %d, want at most the budget of 15", flood, created, autoCreateAttackTopics)
	}
	if fromBatch > 10 {
		t.Errorf("one Metadata request created %d topics, want at most 10", fromBatch)
	}
	if created == 0 {
		t.Error("no topic was auto-created: the budget should allow some")
	}
	canary(t, plaintext(b.Addr()), 20)
}
