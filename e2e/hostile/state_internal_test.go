package hostile

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// internalTopics are the broker-owned topics no client may write.
var internalTopics = []string{"__consumer_offsets", "__transaction_state", "__share_group_state"}

// attackInternalTopics tries every client write to the internal topics —
// produce, delete records, delete, add partitions, set configs (whole-set
// and incremental), add one to a transaction (whose markers the
// coordinator would then write there) — and checks each is refused with
// INVALID_TOPIC_EXCEPTION.
func attackInternalTopics(t *testing.T, tg target) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := adminClient(t, tg)
	c := tg.dial(t)
	refused := func(what, topic string, err error) {
		if !errors.Is(err, kerr.InvalidTopicException) {
			t.Errorf("%s on %s: %v, want INVALID_TOPIC_EXCEPTION", what, topic, err)
		}
	}
	for _, topic := range internalTopics {
		pr := c.Request(testenv.ProduceRequest(topic, 0, testenv.Batch("forged")), 9).(*kmsg.ProduceResponse)
		refused("Produce", topic, kerr.ErrorForCode(pr.Topics[0].Partitions[0].ErrorCode))

		dr, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: kadm.Offset{Topic: topic, Partition: 0, At: -1}}})
		if err != nil {
			t.Fatal(err)
		}
		refused("DeleteRecords", topic, dr[topic][0].Err)

		dt, err := adm.DeleteTopics(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		refused("DeleteTopics", topic, dt[topic].Err)

		cp, err := adm.UpdatePartitions(ctx, 1000, topic)
		if err != nil {
			t.Fatal(err)
		}
		refused("CreatePartitions", topic, cp[topic].Err)

		retention := []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("1")}}
		inc, err := adm.AlterTopicConfigs(ctx, retention, topic)
		if err != nil {
			t.Fatal(err)
		}
		refused("IncrementalAlterConfigs", topic, inc[0].Err)
		whole, err := adm.AlterTopicConfigsState(ctx, retention, topic)
		if err != nil {
			t.Fatal(err)
		}
		refused("AlterConfigs", topic, whole[0].Err)

		init := kmsg.NewPtrInitProducerIDRequest()
		init.TransactionalID = kmsg.StringPtr("into-" + topic)
		init.TransactionTimeoutMillis = 60000
		ir := c.Request(init, 4).(*kmsg.InitProducerIDResponse)
		if ir.ErrorCode != 0 {
			t.Fatalf("InitProducerId: %v", kerr.ErrorForCode(ir.ErrorCode))
		}
		add := kmsg.NewPtrAddPartitionsToTxnRequest()
		add.TransactionalID, add.ProducerID, add.ProducerEpoch = *init.TransactionalID, ir.ProducerID, ir.ProducerEpoch
		at := kmsg.NewAddPartitionsToTxnRequestTopic()
		at.Topic, at.Partitions = topic, []int32{0}
		add.Topics = append(add.Topics, at)
		ar := c.Request(add, 3).(*kmsg.AddPartitionsToTxnResponse)
		refused("AddPartitionsToTxn", topic, kerr.ErrorForCode(ar.Topics[0].Partitions[0].ErrorCode))
	}
}

// The internal topics keep their partitions, configs and contents under
// every client write. Before the fix CreatePartitions, AddPartitionsToTxn
// and both AlterConfigs were accepted (retention.ms=1 on __transaction_state
// deletes the coordinator's only record of every transactional id).
func TestStateInternalTopics(t *testing.T) {
	b := startBroker(t, nil)
	adm := adminClient(t, plaintext(b.Addr()))
	before, err := adm.ListTopicsWithInternal(t.Context(), internalTopics...)
	if err != nil {
		t.Fatal(err)
	}
	attackInternalTopics(t, plaintext(b.Addr()))
	after, err := adm.ListTopicsWithInternal(t.Context(), internalTopics...)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range internalTopics {
		if len(after[topic].Partitions) != len(before[topic].Partitions) || after[topic].ID != before[topic].ID {
			t.Errorf("%s: %d partitions (id %v) after the attack, %d (id %v) before", topic,
				len(after[topic].Partitions), after[topic].ID, len(before[topic].Partitions), before[topic].ID)
		}
	}
	rcs, err := adm.DescribeTopicConfigs(t.Context(), internalTopics...)
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "retention.ms" && c.MaybeValue() == "1" {
				t.Errorf("%s: retention.ms=1 after the attack", rc.Name)
			}
		}
	}
	canary(t, plaintext(b.Addr()), 20)
}
