package broker

import (
	"errors"
	"fmt"

	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
)

// checkTransactionalProduce is the produce handler's check of a
// transactional batch (server-side verification, KIP-890 part 1): the
// partition must be in the running transaction of txnID with exactly this
// producer id and epoch, so a late or zombie write from an earlier
// transaction can never land in a later one or open a transaction nobody
// will end. With implicitAdd (Produce v12+, KIP-890 part 2) the partition
// is added to the transaction instead, starting one if none runs.
//
// The returned wait must succeed before the batch is appended: it returns
// once the partition's membership is durable in the transaction log, which
// means one fsync of that log on the first produce to a partition in a
// transaction (never on later ones). Appending the batch before that could
// leave, after a crash, a batch in a transaction the coordinator has no
// record of — a hanging transaction. The produce handler checks every
// partition of a request first and waits once.
//
// Errors: INVALID_PRODUCER_ID_MAPPING (unknown id or another producer id),
// INVALID_PRODUCER_EPOCH (stale or future epoch), TRANSACTION_ABORTABLE
// (v12 producer whose transaction the coordinator aborted on timeout),
// INVALID_TXN_STATE (partition not in the transaction), CONCURRENT_
// TRANSACTIONS (the transaction is ending), COORDINATOR_NOT_AVAILABLE.
func (b *Broker) checkTransactionalProduce(txnID string, pid int64, epoch int16, topic string, partition int32, implicitAdd bool) (wait func() error, err error) {
	var tc *txnCoordinator
	if b.hosting() {
		tc = b.coords().txn
	}
	if tc == nil && b.clustered() {
		return func() error {
			return b.checkRemoteTransactionalProduce(txnID, pid, epoch, topic, partition, implicitAdd)
		}, nil
	}
	if tc == nil {
		return nil, &kerrError{kerr.CoordinatorNotAvailable, "the transaction coordinator is not running"}
	}
	describe := func(err error) error {
		var ke *kerr.Error
		if !errors.As(err, &ke) {
			ke = kerr.CoordinatorNotAvailable
		}
		return &kerrError{ke, fmt.Sprintf("transactional produce to %s/%d by producer %d epoch %d of %q: %s", topic, partition, pid, epoch, txnID, ke.Message)}
	}
	w, err := tc.d.PrepareProduce(txnID, pid, epoch, txn.TopicPartition{Topic: topic, Partition: partition}, implicitAdd)
	if err != nil {
		return nil, describe(err)
	}
	return func() error {
		if err := w(); err != nil {
			return describe(err)
		}
		return nil
	}, nil
}
