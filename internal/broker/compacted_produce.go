package broker

import (
	"context"
	"fmt"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/record"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// recordErrors refuses a batch for some of its records (KIP-467): the
// partition answers code with one ErrorRecords entry per record and the
// batch-level message, as Kafka does for keyless records on a compacted
// topic.
type recordErrors struct {
	*kerrError // the partition's code and message
	indexes    []int32
	each       string
}

// Unwrap gives errorCode the partition's code.
func (e *recordErrors) Unwrap() error { return e.kerrError }

// fill writes e into a produce response partition.
func (e *recordErrors) fill(sp *kmsg.ProduceResponseTopicPartition) {
	for _, i := range e.indexes {
		er := kmsg.NewProduceResponseTopicPartitionErrorRecord()
		er.RelativeOffset = i
		er.ErrorMessage = kmsg.StringPtr(e.each)
		sp.ErrorRecords = append(sp.ErrorRecords, er)
	}
}

// refuseKeyless refuses a batch holding records without a key for a topic
// whose cleanup.policy includes compact: the cleaner could never decide
// which of them is the latest (Kafka: INVALID_RECORD, "Compacted topic
// cannot accept message without key in topic partition ..."). limit bounds
// the decompressed records, as in validation.
func (b *Broker) refuseKeyless(ctx context.Context, t *cluster.Topic, partition int32, h record.Header, batch []byte, limit int64) error {
	if !b.compacted(t) {
		return nil
	}
	var missing []int32
	i := int32(0)
	if err := record.ForEachLimit(ctx, h, batch, limit, func(r record.Record) bool {
		if r.Key == nil {
			missing = append(missing, i)
		}
		i++
		return true
	}); err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	msg := fmt.Sprintf("Compacted topic cannot accept message without key in topic partition %s-%d.", t.Name, partition)
	return &recordErrors{kerrError: &kerrError{kerr.InvalidRecord, msg}, indexes: missing, each: msg}
}
