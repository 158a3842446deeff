package broker

// CreatePartitions (key 37), versions 0-3.
//
// Raises a topic's partition count (never lowers it: INVALID_PARTITIONS).
// A manual assignment must place each new partition on this node alone
// (INVALID_REPLICA_ASSIGNMENT). ValidateOnly checks without changing.
// Internal topics keep their partition count (INVALID_TOPIC_EXCEPTION):
// groups and transactional ids are placed by it.

import (
	"context"
	"fmt"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(37, 0, 3, (*Broker).handleCreatePartitions) }

func (b *Broker) handleCreatePartitions(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.CreatePartitionsRequest)
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewCreatePartitionsResponseTopic()
		st.Topic = rt.Topic
		err := func() error {
			if !b.authorized(r, acl.OpAlter, acl.ResourceTopic, rt.Topic) {
				return errTopicAuthorization
			}
			t, ok := b.catalog.Topic(rt.Topic)
			if !ok {
				return fmt.Errorf("%w: %q", cluster.ErrUnknownTopic, rt.Topic)
			}
			if err := refuseInternal(t); err != nil {
				return err
			}
			if rt.Count <= t.Partitions {
				return fmt.Errorf("%w: topic %q has %d partitions; the new count %d must be larger", cluster.ErrInvalidPartitions, rt.Topic, t.Partitions, rt.Count)
			}
			if rt.Assignment != nil {
				if len(rt.Assignment) != int(rt.Count-t.Partitions) {
					return &kerrError{kerr.InvalidReplicaAssignment, fmt.Sprintf("%d assignments for %d new partitions", len(rt.Assignment), rt.Count-t.Partitions)}
				}
				for _, a := range rt.Assignment {
					if len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.NodeID {
						return &kerrError{kerr.InvalidReplicaAssignment, fmt.Sprintf("new partitions must be assigned to broker %d alone", b.cfg.NodeID)}
					}
				}
			}
			if req.ValidateOnly {
				return nil
			}
			return b.addPartitions(rt.Topic, rt.Count)
		}()
		st.ErrorCode = errorCode(err)
		st.ErrorMessage = errMsg(err)
		resp.Topics = append(resp.Topics, st)
	}
	return immediate(resp)
}
