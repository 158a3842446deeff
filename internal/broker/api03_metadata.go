package broker

// Metadata (key 3), versions 0-12.
//
// A single node leads every partition, with itself as the only replica and
// ISR member; in a cluster every unfenced broker is listed and each
// partition names its replicas, its leader (the first replica, -1 with
// LEADER_NOT_AVAILABLE while that broker is fenced), the ISR (the leader)
// and offline replicas (cluster.go). Leader epoch is always 0. Topics may be named or
// (v10+) identified by topic ID. A request for an unknown topic creates it
// when auto.create.topics.enable is true and the request allows it (v4+
// AllowAutoTopicCreation; always for v0-v3), with num.partitions partitions,
// at most auto.create.topics.max.per.minute topics a minute broker-wide and
// maxAutoCreatePerRequest per request; past either bound the topic is
// answered UNKNOWN_TOPIC_OR_PARTITION, as when auto-creation is off, and
// the client's retry creates it later.
// v0 treats an empty topic list as "all topics"; v1+ uses null for that.
// With an authorizer, an all-topics listing leaves out the topics the
// principal may not DESCRIBE; a topic named (or identified) explicitly
// that it may not DESCRIBE is TOPIC_AUTHORIZATION_FAILED, whether it
// exists or not, and auto-creation needs CREATE on the cluster or on the
// topic (TOPIC_AUTHORIZATION_FAILED otherwise), as in Kafka.
// Gaps: authorized operations are not computed (reported as "not
// requested").

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(3, 0, 12, (*Broker).handleMetadata) }

const authorizedOpsUnknown = -2147483648

func (b *Broker) handleMetadata(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.MetadataRequest)
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	resp.Brokers = b.metadataBrokers(r)
	cid := b.ClusterID()
	resp.ClusterID = &cid
	resp.ControllerID = b.controllerID()

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		for _, t := range b.catalog.Topics() {
			if b.visible(r, acl.OpDescribe, acl.ResourceTopic, t.Name) {
				resp.Topics = append(resp.Topics, b.topicMetadata(t))
			}
		}
		return immediate(resp)
	}
	autoCreate := (req.Version < 4 || req.AllowAutoTopicCreation) && b.brokerBool("auto.create.topics.enable")
	created := 0
	for _, rt := range req.Topics {
		var t *cluster.Topic
		var ok bool
		switch {
		case rt.Topic != nil:
			t, ok = b.catalog.Topic(*rt.Topic)
		case rt.TopicID != [16]byte{}:
			t, ok = b.catalog.TopicByID(rt.TopicID)
			if !ok {
				mt := kmsg.NewMetadataResponseTopic()
				mt.TopicID = rt.TopicID
				mt.ErrorCode = kerr.UnknownTopicID.Code
				resp.Topics = append(resp.Topics, mt)
				continue
			}
		}
		if ok && !b.authorized(r, acl.OpDescribe, acl.ResourceTopic, t.Name) {
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic, mt.TopicID = rt.Topic, rt.TopicID
			mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		if !ok && rt.Topic != nil {
			name := *rt.Topic
			err := cluster.ValidateTopicName(name)
			if err == nil && (!b.authorized(r, acl.OpDescribe, acl.ResourceTopic, name) ||
				autoCreate && !b.visible(r, acl.OpCreate, acl.ResourceCluster, acl.ClusterName) && !b.authorized(r, acl.OpCreate, acl.ResourceTopic, name)) {
				err = errTopicAuthorization
			} else if err == nil && autoCreate && !b.mayAutoCreate(&created) {
				err = fmt.Errorf("%w: %q (auto-creation is over its bound; retry later)", cluster.ErrUnknownTopic, name)
			} else if err == nil && autoCreate {
				t, err = b.createTopic(name, int32(b.brokerInt("num.partitions")), nil)
				if errors.Is(err, cluster.ErrTopicExists) { // lost a race with another creator
					t, ok = b.catalog.Topic(name)
					err = nil
				}
				ok = err == nil
			} else if err == nil {
				err = cluster.ErrUnknownTopic
			}
			if !ok {
				mt := kmsg.NewMetadataResponseTopic()
				mt.Topic = kmsg.StringPtr(name)
				mt.ErrorCode = errorCode(err)
				resp.Topics = append(resp.Topics, mt)
				continue
			}
		}
		resp.Topics = append(resp.Topics, b.topicMetadata(t))
	}
	return immediate(resp)
}

// mayAutoCreate spends one of this request's creations (counted in
// created) and one of the broker's per-minute budget.
func (b *Broker) mayAutoCreate(created *int) bool {
	if *created >= maxAutoCreatePerRequest {
		return false
	}
	if !b.autoCreate.take(time.Now(), b.brokerInt("auto.create.topics.max.per.minute")) {
		return false
	}
	*created++
	return true
}

func (b *Broker) brokerEntry(r *server.Request) kmsg.MetadataResponseBroker {
	br := kmsg.NewMetadataResponseBroker()
	br.NodeID = b.cfg.NodeID
	br.Host, br.Port = b.advertised(r)
	return br
}

func (b *Broker) topicMetadata(t *cluster.Topic) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic = kmsg.StringPtr(t.Name)
	mt.TopicID = t.ID
	mt.IsInternal = t.Internal
	mt.AuthorizedOperations = authorizedOpsUnknown
	for i := int32(0); i < t.Partitions; i++ {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = i
		mp.LeaderEpoch = 0
		b.partitionMetadata(t, i, &mp)
		mt.Partitions = append(mt.Partitions, mp)
	}
	return mt
}
