package broker

// DeleteTopics (key 20), versions 1-6.
//
// Removes the topic from the catalog (durably) first, then its partition
// directories; a crash in between leaves directories that the next start
// removes. v6 may name topics by ID. delete.topic.enable=false answers
// TOPIC_DELETION_DISABLED; unknown names UNKNOWN_TOPIC_OR_PARTITION, unknown
// IDs UNKNOWN_TOPIC_ID. Needs DELETE on the topic (TOPIC_AUTHORIZATION_FAILED,
// before any other check, as Kafka); a topic asked by id that the principal
// may not DESCRIBE is answered without its name.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(20, 1, 6, (*Broker).handleDeleteTopics) }

func (b *Broker) handleDeleteTopics(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DeleteTopicsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	type target struct {
		name *string
		id   [16]byte
	}
	var targets []target
	if req.Version >= 6 {
		for _, t := range req.Topics {
			targets = append(targets, target{t.Topic, t.TopicID})
		}
	} else {
		for _, n := range req.TopicNames {
			targets = append(targets, target{kmsg.StringPtr(n), [16]byte{}})
		}
	}
	for _, tg := range targets {
		st := kmsg.NewDeleteTopicsResponseTopic()
		st.Topic, st.TopicID = tg.name, tg.id
		name := ""
		switch {
		case tg.name != nil:
			name = *tg.name
			if t, ok := b.catalog.Topic(name); ok {
				st.TopicID = t.ID
			} else {
				st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			}
		default:
			if t, ok := b.catalog.TopicByID(tg.id); ok {
				name = t.Name
				st.Topic = kmsg.StringPtr(name)
			} else {
				st.ErrorCode = kerr.UnknownTopicID.Code
			}
		}
		if name != "" && !b.authorized(r, acl.OpDelete, acl.ResourceTopic, name) {
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
			if tg.name == nil && !b.visible(r, acl.OpDescribe, acl.ResourceTopic, name) {
				st.Topic = nil // asked by id: the name is not the principal's to learn (Kafka)
			}
		}
		if t, ok := b.catalog.Topic(name); ok && st.ErrorCode == 0 {
			if err := refuseInternal(t); err != nil {
				st.ErrorCode, st.ErrorMessage = errorCode(err), errMsg(err)
			}
		}
		if st.ErrorCode == 0 && !b.brokerBool("delete.topic.enable") {
			st.ErrorCode = kerr.TopicDeletionDisabled.Code
		}
		if st.ErrorCode == 0 {
			if err := b.deleteTopic(name); err != nil {
				st.ErrorCode = errorCode(err)
				st.ErrorMessage = errMsg(err)
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return immediate(resp)
}
