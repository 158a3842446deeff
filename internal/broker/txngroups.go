package broker

import (
	"github.com/exactly/exactly/internal/group"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupsForTxn adapts the group coordinator to what transactions need.
type groupsForTxn struct{ c *group.Coordinator }

func (g groupsForTxn) ValidateTxnCommit(groupID, memberID string, generation int32, instanceID *string) error {
	return g.c.ValidateTxnCommit(groupID, memberID, generation, instanceID)
}

func (g groupsForTxn) StageTxnOffsets(pid int64, epoch int16, groupID string, topics []kmsg.TxnOffsetCommitRequestTopic) error {
	var offs []group.TxnOffset
	for _, t := range topics {
		for _, p := range t.Partitions {
			o := group.TxnOffset{Topic: t.Topic, Partition: p.Partition, Offset: p.Offset, LeaderEpoch: p.LeaderEpoch}
			if p.Metadata != nil {
				o.Metadata = *p.Metadata
			}
			offs = append(offs, o)
		}
	}
	return g.c.StageTxnOffsets(pid, epoch, groupID, offs...)
}
