package broker

// Partial denials: requests that name several groups or topics are
// answered per resource, as Kafka answers them. The denied resources are
// taken out of the request before the handler (and so the coordinator)
// sees it — a denied resource is never read, written or deleted — and
// their refusals are put back into the handler's answer. A request with
// nothing left is answered without running the handler.
//
// Requests about one group, transactional id or the cluster are still
// refused whole in gateRequest; these come after that gate (OffsetCommit,
// OffsetDelete and TxnOffsetCommit have passed their group and
// transactional id checks when their topics are split here).

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partialDenial is a request with what its principal may not touch taken
// out, and how to put the refusals back into the answer.
type partialDenial struct {
	// allowed is the request the handler serves; nil when nothing is left.
	allowed kmsg.Request
	// merge adds the refusals to the handler's answer (or to an empty
	// response of the request's kind when nothing was left).
	merge func(kmsg.Response) kmsg.Response
}

// handlePartial serves p.allowed in r's place and merges the refusals
// into the answer, deferred or not.
func (b *Broker) handlePartial(ctx context.Context, r *server.Request, p *partialDenial) server.Reply {
	if p.allowed == nil {
		return immediate(p.merge(r.Msg.ResponseKind()))
	}
	allowed := *r
	allowed.Msg = p.allowed
	reply := apis[r.Header.APIKey].fn(b, ctx, &allowed)
	switch {
	case reply.Wait != nil:
		wait := reply.Wait
		reply.Wait = func() kmsg.Response { return p.merge(wait()) }
	case reply.Response != nil:
		reply.Response = p.merge(reply.Response)
	}
	return reply
}

// splitDenied takes the denied groups and topics out of a multi-resource
// group API request; nil when the request goes to its handler unchanged.
func (b *Broker) splitDenied(r *server.Request) *partialDenial {
	if !b.authz.enabled || r.Conn == nil {
		return nil
	}
	switch req := r.Msg.(type) {
	case *kmsg.DescribeGroupsRequest:
		return b.splitGroups(r, acl.OpDescribe, req.Groups, func(allowed []string) kmsg.Request {
			cp := *req
			cp.Groups = allowed
			return &cp
		}, func(resp kmsg.Response, denied []string) {
			dr := resp.(*kmsg.DescribeGroupsResponse)
			refused := make([]kmsg.DescribeGroupsResponseGroup, 0, len(denied)+len(dr.Groups))
			for _, g := range denied {
				e := kmsg.NewDescribeGroupsResponseGroup()
				e.Group, e.ErrorCode = g, kerr.GroupAuthorizationFailed.Code
				refused = append(refused, e)
			}
			dr.Groups = append(refused, dr.Groups...)
		})
	case *kmsg.ConsumerGroupDescribeRequest:
		return b.splitGroups(r, acl.OpDescribe, req.Groups, func(allowed []string) kmsg.Request {
			cp := *req
			cp.Groups = allowed
			return &cp
		}, func(resp kmsg.Response, denied []string) {
			dr := resp.(*kmsg.ConsumerGroupDescribeResponse)
			refused := make([]kmsg.ConsumerGroupDescribeResponseGroup, 0, len(denied)+len(dr.Groups))
			for _, g := range denied {
				e := kmsg.NewConsumerGroupDescribeResponseGroup()
				e.Group, e.ErrorCode = g, kerr.GroupAuthorizationFailed.Code
				refused = append(refused, e)
			}
			dr.Groups = append(refused, dr.Groups...)
		})
	case *kmsg.DeleteGroupsRequest:
		return b.splitGroups(r, acl.OpDelete, req.Groups, func(allowed []string) kmsg.Request {
			cp := *req
			cp.Groups = allowed
			return &cp
		}, func(resp kmsg.Response, denied []string) {
			dr := resp.(*kmsg.DeleteGroupsResponse)
			for _, g := range denied {
				e := kmsg.NewDeleteGroupsResponseGroup()
				e.Group, e.ErrorCode = g, kerr.GroupAuthorizationFailed.Code
				dr.Groups = append(dr.Groups, e)
			}
		})
	case *kmsg.OffsetFetchRequest:
		return b.splitOffsetFetch(r, req)
	case *kmsg.OffsetCommitRequest:
		byID := req.Version >= 10
		kept, denied := splitTopics(b, r, acl.OpRead, req.Topics, func(t kmsg.OffsetCommitRequestTopic) (string, [16]byte) { return t.Topic, t.TopicID }, byID)
		if len(denied) == 0 {
			return nil
		}
		p := &partialDenial{merge: func(resp kmsg.Response) kmsg.Response {
			cr := resp.(*kmsg.OffsetCommitResponse)
			for _, t := range denied {
				rt := kmsg.NewOffsetCommitResponseTopic()
				rt.Topic, rt.TopicID = t.Topic, t.TopicID
				for _, p := range t.Partitions {
					rp := kmsg.NewOffsetCommitResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p.Partition, kerr.TopicAuthorizationFailed.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				cr.Topics = append(cr.Topics, rt)
			}
			return cr
		}}
		if len(kept) > 0 {
			cp := *req
			cp.Topics = kept
			p.allowed = &cp
		}
		return p
	case *kmsg.OffsetDeleteRequest:
		kept, denied := splitTopics(b, r, acl.OpRead, req.Topics, func(t kmsg.OffsetDeleteRequestTopic) (string, [16]byte) { return t.Topic, [16]byte{} }, false)
		if len(denied) == 0 {
			return nil
		}
		p := &partialDenial{merge: func(resp kmsg.Response) kmsg.Response {
			dr := resp.(*kmsg.OffsetDeleteResponse)
			for _, t := range denied {
				rt := kmsg.NewOffsetDeleteResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewOffsetDeleteResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p.Partition, kerr.TopicAuthorizationFailed.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				dr.Topics = append(dr.Topics, rt)
			}
			return dr
		}}
		if len(kept) > 0 {
			cp := *req
			cp.Topics = kept
			p.allowed = &cp
		}
		return p
	case *kmsg.TxnOffsetCommitRequest:
		kept, denied := splitTopics(b, r, acl.OpRead, req.Topics, func(t kmsg.TxnOffsetCommitRequestTopic) (string, [16]byte) { return t.Topic, [16]byte{} }, false)
		if len(denied) == 0 {
			return nil
		}
		p := &partialDenial{merge: func(resp kmsg.Response) kmsg.Response {
			tr := resp.(*kmsg.TxnOffsetCommitResponse)
			for _, t := range denied {
				rt := kmsg.NewTxnOffsetCommitResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p.Partition, kerr.TopicAuthorizationFailed.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				tr.Topics = append(tr.Topics, rt)
			}
			return tr
		}}
		if len(kept) > 0 {
			cp := *req
			cp.Topics = kept
			p.allowed = &cp
		}
		return p
	}
	return nil
}

// splitGroups checks op on each named group (each distinct name once, as
// Kafka does); with one denied, the allowed ones go to the handler in a
// request built by withGroups and refuse adds the denied ones' answers.
func (b *Broker) splitGroups(r *server.Request, op acl.Operation, groups []string,
	withGroups func([]string) kmsg.Request, refuse func(kmsg.Response, []string)) *partialDenial {
	var allowed, denied []string
	verdict := map[string]bool{}
	for _, g := range groups {
		ok, seen := verdict[g]
		if !seen {
			ok = b.authorized(r, op, acl.ResourceGroup, g)
			verdict[g] = ok
			if !ok {
				denied = append(denied, g)
			}
		}
		if ok {
			allowed = append(allowed, g)
		}
	}
	if len(denied) == 0 {
		return nil
	}
	p := &partialDenial{merge: func(resp kmsg.Response) kmsg.Response {
		refuse(resp, denied)
		return resp
	}}
	if len(allowed) > 0 {
		p.allowed = withGroups(allowed)
	}
	return p
}

// topicNamed resolves a request's reference to a topic (by id in the
// offset APIs from v10); known is false for an id no topic has, which the
// handler answers as unknown.
func (b *Broker) topicNamed(name string, id [16]byte, byID bool) (resolved string, known bool) {
	if !byID {
		return name, true
	}
	t, ok := b.catalog.TopicByID(id)
	if !ok {
		return "", false
	}
	return t.Name, true
}

// splitTopics separates the topics r's principal may perform op on from
// those it may not (each denial audited once per topic).
func splitTopics[T any](b *Broker, r *server.Request, op acl.Operation, topics []T, ref func(T) (string, [16]byte), byID bool) (kept, denied []T) {
	verdict := map[string]bool{}
	for _, t := range topics {
		name, id := ref(t)
		resolved, known := b.topicNamed(name, id, byID)
		if !known {
			kept = append(kept, t)
			continue
		}
		ok, seen := verdict[resolved]
		if !seen {
			ok = b.authorized(r, op, acl.ResourceTopic, resolved)
			verdict[resolved] = ok
		}
		if ok {
			kept = append(kept, t)
		} else {
			denied = append(denied, t)
		}
	}
	return kept, denied
}

// splitOffsetFetch answers OffsetFetch per group (v8+) and per topic:
// a group without DESCRIBE is GROUP_AUTHORIZATION_FAILED (before v8 the
// single group is refused whole in gateRequest), a named topic without
// DESCRIBE is TOPIC_AUTHORIZATION_FAILED per partition, and a fetch of
// every committed topic leaves out the topics it may not describe.
func (b *Broker) splitOffsetFetch(r *server.Request, req *kmsg.OffsetFetchRequest) *partialDenial {
	byID := req.Version >= 10
	topicRef := func(t kmsg.OffsetFetchRequestGroupTopic) (string, [16]byte) { return t.Topic, t.TopicID }
	if req.Version < 8 {
		if req.Topics == nil && req.Version >= 2 {
			return &partialDenial{allowed: req, merge: func(resp kmsg.Response) kmsg.Response {
				fr := resp.(*kmsg.OffsetFetchResponse)
				kept := fr.Topics[:0]
				for _, t := range fr.Topics {
					if b.visible(r, acl.OpDescribe, acl.ResourceTopic, t.Topic) {
						kept = append(kept, t)
					}
				}
				fr.Topics = kept
				return fr
			}}
		}
		kept, denied := splitTopics(b, r, acl.OpDescribe, req.Topics, func(t kmsg.OffsetFetchRequestTopic) (string, [16]byte) { return t.Topic, [16]byte{} }, false)
		if len(denied) == 0 {
			return nil
		}
		cp := *req
		cp.Topics = append([]kmsg.OffsetFetchRequestTopic{}, kept...) // never nil: nil asks for every topic
		return &partialDenial{allowed: &cp, merge: func(resp kmsg.Response) kmsg.Response {
			fr := resp.(*kmsg.OffsetFetchResponse)
			if fr.ErrorCode != 0 {
				return fr
			}
			for _, t := range denied {
				rt := kmsg.NewOffsetFetchResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewOffsetFetchResponseTopicPartition()
					rp.Partition, rp.Offset, rp.LeaderEpoch = p, -1, -1
					rp.Metadata, rp.ErrorCode = kmsg.StringPtr(""), kerr.TopicAuthorizationFailed.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				fr.Topics = append(fr.Topics, rt)
			}
			return fr
		}}
	}
	type groupSplit struct {
		denied       bool                                // no DESCRIBE on the group
		filterAll    bool                                // every committed topic asked: filter the answer
		deniedTopics []kmsg.OffsetFetchRequestGroupTopic // named topics refused
	}
	splits := make([]groupSplit, len(req.Groups))
	cp := *req
	cp.Groups = nil
	changed := false
	for i, g := range req.Groups {
		if !b.authorized(r, acl.OpDescribe, acl.ResourceGroup, g.Group) {
			splits[i].denied, changed = true, true
			continue
		}
		if g.Topics == nil {
			splits[i].filterAll, changed = true, true
		} else {
			kept, denied := splitTopics(b, r, acl.OpDescribe, g.Topics, topicRef, byID)
			if len(denied) > 0 {
				g.Topics = append([]kmsg.OffsetFetchRequestGroupTopic{}, kept...) // never nil: nil asks for every topic
				splits[i].deniedTopics, changed = denied, true
			}
		}
		cp.Groups = append(cp.Groups, g)
	}
	if !changed {
		return nil
	}
	p := &partialDenial{merge: func(resp kmsg.Response) kmsg.Response {
		fr := resp.(*kmsg.OffsetFetchResponse)
		answered := fr.Groups
		fr.Groups = make([]kmsg.OffsetFetchResponseGroup, 0, len(req.Groups))
		for i, g := range req.Groups {
			if splits[i].denied {
				e := kmsg.NewOffsetFetchResponseGroup()
				e.Group, e.ErrorCode = g.Group, kerr.GroupAuthorizationFailed.Code
				fr.Groups = append(fr.Groups, e)
				continue
			}
			if len(answered) == 0 {
				continue
			}
			e := answered[0] // the handler answers its groups in request order
			answered = answered[1:]
			if e.ErrorCode == 0 && splits[i].filterAll {
				kept := e.Topics[:0]
				for _, t := range e.Topics {
					name, known := b.topicNamed(t.Topic, t.TopicID, byID && t.Topic == "")
					if known && b.visible(r, acl.OpDescribe, acl.ResourceTopic, name) {
						kept = append(kept, t)
					}
				}
				e.Topics = kept
			}
			if e.ErrorCode == 0 {
				for _, t := range splits[i].deniedTopics {
					rt := kmsg.NewOffsetFetchResponseGroupTopic()
					rt.Topic, rt.TopicID = t.Topic, t.TopicID
					for _, p := range t.Partitions {
						rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
						rp.Partition, rp.Offset, rp.LeaderEpoch = p, -1, -1
						rp.Metadata, rp.ErrorCode = kmsg.StringPtr(""), kerr.TopicAuthorizationFailed.Code
						rt.Partitions = append(rt.Partitions, rp)
					}
					e.Topics = append(e.Topics, rt)
				}
			}
			fr.Groups = append(fr.Groups, e)
		}
		return fr
	}}
	if len(cp.Groups) > 0 {
		p.allowed = &cp
	}
	return p
}
