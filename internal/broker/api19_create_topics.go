package broker

// CreateTopics (key 19), versions 2-7.
//
// NumPartitions -1 means num.partitions; ReplicationFactor -1 means 1, and
// anything but 1 is INVALID_REPLICATION_FACTOR (one broker; in a cluster,
// partitions are not replicated yet). A manual replica assignment must
// place every partition on this node alone — in a cluster, on one
// registered broker each — (INVALID_REPLICA_ASSIGNMENT otherwise) and then
// fixes the partition count. In a cluster, partitions without an
// assignment are spread over the unfenced brokers (cluster.go).
// Configs are validated against the known topic keys (INVALID_CONFIG with a
// message naming the key). ValidateOnly checks without creating. v5+ returns
// the resulting configs, v7 the topic ID. Names: INVALID_TOPIC_EXCEPTION;
// duplicates inside one request: INVALID_REQUEST; existing:
// TOPIC_ALREADY_EXISTS. Needs CREATE on the cluster or the topic
// (TOPIC_AUTHORIZATION_FAILED per topic); without DESCRIBE_CONFIGS on a
// created topic its configs are left out and ConfigErrorCode is
// TOPIC_AUTHORIZATION_FAILED, as in Kafka.

import (
	"context"
	"fmt"
	"slices"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(19, 2, 7, (*Broker).handleCreateTopics) }

func (b *Broker) handleCreateTopics(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.CreateTopicsRequest)
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	seen := map[string]int{}
	for _, rt := range req.Topics {
		seen[rt.Topic]++
	}
	for _, rt := range req.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = rt.Topic
		st.NumPartitions, st.ReplicationFactor = -1, -1
		err := func() error {
			if !b.visible(r, acl.OpCreate, acl.ResourceCluster, acl.ClusterName) && !b.authorized(r, acl.OpCreate, acl.ResourceTopic, rt.Topic) {
				return errTopicAuthorization
			}
			if seen[rt.Topic] > 1 {
				return &kerrError{kerr.InvalidRequest, fmt.Sprintf("topic %q appears more than once in the request", rt.Topic)}
			}
			partitions := rt.NumPartitions
			var replicas [][]int32
			if len(rt.ReplicaAssignment) > 0 {
				if rt.NumPartitions != -1 || rt.ReplicationFactor != -1 {
					return &kerrError{kerr.InvalidRequest, "both a replica assignment and a partition count or replication factor were given"}
				}
				for i, a := range rt.ReplicaAssignment {
					if a.Partition != int32(i) {
						return &kerrError{kerr.InvalidReplicaAssignment, "replica assignment partitions must be 0..n-1 in order"}
					}
					if b.clustered() {
						if len(a.Replicas) == 0 || len(a.Replicas) > 1 && len(a.Replicas) != len(rt.ReplicaAssignment[0].Replicas) {
							return &kerrError{kerr.InvalidReplicaAssignment, fmt.Sprintf("partition %d has %d replicas: every partition needs the same number, at least one", i, len(a.Replicas))}
						}
						for j, id := range a.Replicas {
							if _, ok := b.catalog.Broker(id); !ok {
								return &kerrError{kerr.InvalidReplicaAssignment, fmt.Sprintf("partition %d is assigned to broker %d, which is not registered", i, id)}
							}
							if slices.Contains(a.Replicas[:j], id) {
								return &kerrError{kerr.InvalidReplicaAssignment, fmt.Sprintf("partition %d names broker %d twice", i, id)}
							}
						}
						replicas = append(replicas, slices.Clone(a.Replicas))
						continue
					}
					if len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.NodeID {
						return &kerrError{kerr.InvalidReplicaAssignment, fmt.Sprintf("partition %d must be assigned to broker %d alone (single-node cluster)", i, b.cfg.NodeID)}
					}
				}
				partitions = int32(len(rt.ReplicaAssignment))
			}
			if partitions == -1 {
				partitions = int32(b.brokerInt("num.partitions"))
			}
			rf := int32(rt.ReplicationFactor)
			if rf == -1 {
				rf = int32(b.brokerInt("default.replication.factor"))
			}
			if rf < 1 {
				return &kerrError{kerr.InvalidReplicationFactor, fmt.Sprintf("replication factor %d: it must be at least 1", rt.ReplicationFactor)}
			}
			if !b.clustered() && rf != 1 {
				return &kerrError{kerr.InvalidReplicationFactor, fmt.Sprintf("replication factor %d is larger than the number of available brokers (1)", rf)}
			}
			configs := map[string]string{}
			for _, c := range rt.Configs {
				if c.Value == nil {
					continue
				}
				configs[c.Name] = *c.Value
			}
			if req.ValidateOnly {
				return b.catalog.ValidateNewTopic(rt.Topic, partitions, configs)
			}
			t, err := b.createTopicOn(rt.Topic, partitions, rf, configs, replicas)
			if err != nil {
				return err
			}
			st.TopicID = t.ID
			return nil
		}()
		if err != nil {
			st.ErrorCode = errorCode(err)
			st.ErrorMessage = errMsg(err)
		} else {
			st.NumPartitions = rt.NumPartitions
			if st.NumPartitions == -1 {
				st.NumPartitions = int32(b.brokerInt("num.partitions"))
			}
			if len(rt.ReplicaAssignment) > 0 {
				st.NumPartitions = int32(len(rt.ReplicaAssignment))
			}
			st.ReplicationFactor = 1
			if !b.visible(r, acl.OpDescribeConfigs, acl.ResourceTopic, rt.Topic) {
				// Created, but its configs are not the creator's to read (Kafka).
				st.ConfigErrorCode = kerr.TopicAuthorizationFailed.Code
			} else if t, ok := b.catalog.Topic(rt.Topic); ok && !req.ValidateOnly {
				for _, c := range b.describeTopicConfigs(t, nil, false, false) {
					ct := kmsg.NewCreateTopicsResponseTopicConfig()
					ct.Name, ct.Value, ct.ReadOnly, ct.Source, ct.IsSensitive = c.Name, c.Value, c.ReadOnly, int8(c.Source), c.IsSensitive
					st.Configs = append(st.Configs, ct)
				}
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return immediate(resp)
}
