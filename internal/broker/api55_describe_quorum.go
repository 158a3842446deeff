package broker

// DescribeQuorum (key 55), versions 0-2.
//
// The metadata quorum as this node sees it (Kafka's
// kafka-metadata-quorum.sh describe, `exactly cluster status`): the
// topic __cluster_metadata, partition 0; the leader and its term (the
// leader epoch); the commit index (the high watermark); and each voter
// with the index known replicated on it (its log end offset), which only
// the leader knows: other nodes answer -1 there, so a caller wanting lag
// asks the controller Metadata names. v2 adds each voter's directory id
// and the voters' client listeners. A single node has no quorum: the
// partition answers UNKNOWN_TOPIC_OR_PARTITION. DESCRIBE on the cluster
// is required (CLUSTER_AUTHORIZATION_FAILED).
// Broker-only nodes (raft learners) are the observers. Gaps: the
// last-fetch and caught-up timestamps (v1) are -1.

import (
	"context"
	"encoding/hex"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(55, 0, 2, (*Broker).handleDescribeQuorum) }

// metadataTopic is the metadata quorum's name on the wire, as Kafka's.
const metadataTopic = "__cluster_metadata"

func (b *Broker) handleDescribeQuorum(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeQuorumRequest)
	resp := req.ResponseKind().(*kmsg.DescribeQuorumResponse)
	if !b.authorizedCluster(r, acl.OpDescribe) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return immediate(resp)
	}
	for _, rt := range req.Topics {
		t := kmsg.NewDescribeQuorumResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewDescribeQuorumResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case !b.clustered() || rt.Topic != metadataTopic || rp.Partition != 0:
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			default:
				b.describeQuorum(&p)
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if req.Version >= 2 && b.clustered() {
		for _, br := range b.catalog.Brokers() {
			n := kmsg.NewDescribeQuorumResponseNode()
			n.NodeID = br.ID
			for _, e := range br.Listeners {
				l := kmsg.NewDescribeQuorumResponseNodeListener()
				l.Name, l.Host, l.Port = e.Name, e.Host, uint16(e.Port)
				n.Listeners = append(n.Listeners, l)
			}
			resp.Nodes = append(resp.Nodes, n)
		}
	}
	return immediate(resp)
}

func (b *Broker) describeQuorum(p *kmsg.DescribeQuorumResponseTopicPartition) {
	st := b.node.quorum.Status()
	p.LeaderID = -1
	if st.Leader != 0 {
		p.LeaderID = int32(st.Leader)
	}
	p.LeaderEpoch = int32(st.Term)
	p.HighWatermark = int64(st.Commit)
	leader := st.Leader == st.NodeID
	for _, v := range st.Voters {
		rs := kmsg.NewDescribeQuorumResponseTopicPartitionReplicaState()
		rs.ReplicaID = int32(v.ID)
		if raw, err := hex.DecodeString(v.DirectoryID); err == nil && len(raw) == 16 {
			copy(rs.ReplicaDirectoryID[:], raw)
		}
		rs.LogEndOffset = -1
		if leader {
			rs.LogEndOffset = int64(v.Match)
		}
		rs.LastFetchTimestamp, rs.LastCaughtUpTimestamp = -1, -1
		p.CurrentVoters = append(p.CurrentVoters, rs)
	}
	for _, l := range st.Learners {
		rs := kmsg.NewDescribeQuorumResponseTopicPartitionReplicaState()
		rs.ReplicaID = int32(l.ID)
		if raw, err := hex.DecodeString(l.DirectoryID); err == nil && len(raw) == 16 {
			copy(rs.ReplicaDirectoryID[:], raw)
		}
		rs.LogEndOffset = -1
		if leader {
			rs.LogEndOffset = int64(l.Match)
		}
		rs.LastFetchTimestamp, rs.LastCaughtUpTimestamp = -1, -1
		p.Observers = append(p.Observers, rs)
	}
}
