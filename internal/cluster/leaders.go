package cluster

import (
	"fmt"
	"slices"
)

// PartitionLeader is a replicated partition's leadership as its leader
// last reported it: the partition's raft group decides, the catalog only
// publishes, so Metadata can name the leader on every node.
type PartitionLeader struct {
	// Leader is the reporting leader's node id.
	Leader int32 `json:"leader"`
	// Epoch is the leader epoch: the group's raft term.
	Epoch int32 `json:"epoch"`
	// ISR are the in-sync replicas the leader counted.
	ISR []int32 `json:"isr"`
}

// LeaderReport is one partition's leadership in a set-leaders command.
type LeaderReport struct {
	TopicID   TopicID `json:"topic_id"`
	Partition int32   `json:"partition"`
	PartitionLeader
}

// OpSetLeaders publishes partition leaderships reported by their leaders.
const OpSetLeaders Op = "set-leaders"

// maxLeaderReports bounds the reports of one set-leaders command.
const maxLeaderReports = 4096

// ReportLeaders publishes leaderships; reports older than the published
// epoch of their partition are ignored (a deposed leader's late report).
func (c *Catalog) ReportLeaders(reports []LeaderReport) error {
	_, err := c.commit(Command{Op: OpSetLeaders, Leaders: reports})
	return err
}

// Leader is the published leadership of partition p of t (false if none
// was reported).
func (t *Topic) Leader(p int32) (PartitionLeader, bool) {
	if p < 0 || int(p) >= len(t.Leaders) || t.Leaders[p].Epoch == 0 {
		return PartitionLeader{}, false
	}
	return t.Leaders[p], true
}

// setLeaders applies set-leaders.
func (s *state) setLeaders(reports []LeaderReport) error {
	if len(reports) > maxLeaderReports {
		return fmt.Errorf("%w: %d leader reports (at most %d)", errBadCommand, len(reports), maxLeaderReports)
	}
	for _, r := range reports {
		old, ok := s.byID[r.TopicID]
		if !ok || r.Partition < 0 || r.Partition >= old.Partitions || r.Epoch <= 0 {
			continue // deleted since, or nonsense: nothing to publish
		}
		if cur, ok := old.Leader(r.Partition); ok && r.Epoch < cur.Epoch {
			continue
		}
		nt := *old
		nt.Leaders = slices.Clone(old.Leaders)
		for int32(len(nt.Leaders)) < nt.Partitions {
			nt.Leaders = append(nt.Leaders, PartitionLeader{})
		}
		nt.Leaders[r.Partition] = PartitionLeader{Leader: r.Leader, Epoch: r.Epoch, ISR: slices.Clone(r.ISR)}
		s.byName[nt.Name], s.byID[nt.ID] = &nt, &nt
	}
	return nil
}
