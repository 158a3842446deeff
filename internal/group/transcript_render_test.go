package group

// Rendering for transcripts: one compact line per Kafka request or
// response, showing the fields the coordinator's behaviour depends on, and
// the request builders the transcript commands and the Go tests share.

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func errName(code int16) string {
	if code == 0 {
		return "OK"
	}
	if e := kerr.ErrorForCode(code); e != nil {
		var ke *kerr.Error
		if ok := asKerr(e, &ke); ok {
			return ke.Message
		}
	}
	return fmt.Sprint(code)
}

func asKerr(err error, out **kerr.Error) bool {
	ke, ok := err.(*kerr.Error)
	if ok {
		*out = ke
	}
	return ok
}

func topicName(id [16]byte, topics *staticTopics) string {
	if t, ok := topics.TopicByID(id); ok {
		return t.Name
	}
	return fmt.Sprintf("id:%x", id[:4])
}

func renderAssignment(a *kmsg.ConsumerGroupHeartbeatResponseAssignment, topics *staticTopics) string {
	if a == nil {
		return "-"
	}
	var parts []string
	for _, t := range a.Topics {
		parts = append(parts, fmt.Sprintf("%s%v", topicName(t.TopicID, topics), t.Partitions))
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

func renderKAssignment(a kmsg.Assignment) string {
	var parts []string
	for _, t := range a.TopicPartitions {
		parts = append(parts, fmt.Sprintf("%s%v", t.Topic, t.Partitions))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func strp(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}

func renderRecord(r record) string {
	switch r.kind {
	case recOffset:
		if r.delete {
			return fmt.Sprintf("del(%s/%s/%d)", r.group, r.topic, r.partition)
		}
		return fmt.Sprintf("offset(%s/%s/%d=%d)", r.group, r.topic, r.partition, r.val.Offset)
	case recTxnOffset:
		if r.delete {
			return fmt.Sprintf("txndel(pid%d %s/%s/%d)", r.pid, r.group, r.topic, r.partition)
		}
		return fmt.Sprintf("txn(pid%d %s/%s/%d=%d)", r.pid, r.group, r.topic, r.partition, r.val.Offset)
	case recTxnMarker:
		return fmt.Sprintf("marker(pid%d %s commit=%v)", r.pid, r.group, r.commit)
	case recConsumerGroup:
		if r.delete {
			return fmt.Sprintf("delConsumerGroup(%s)", r.group)
		}
		var st consumerState
		if err := json.Unmarshal(r.cstate, &st); err != nil {
			return "consumerGroup(" + err.Error() + ")"
		}
		var ms []string
		for _, mem := range st.Members {
			ms = append(ms, fmt.Sprintf("%s@%d", mem.ID, mem.Epoch))
		}
		return fmt.Sprintf("consumerGroup(%s epoch=%d [%s])", r.group, st.Epoch, strings.Join(ms, " "))
	case recGroupMeta:
		if r.delete {
			return fmt.Sprintf("delgroup(%s)", r.group)
		}
		var ms []string
		for _, mem := range r.meta.Members {
			ms = append(ms, fmt.Sprintf("%s/%s", mem.MemberID, strp(mem.InstanceID)))
		}
		return fmt.Sprintf("members(%s gen=%d protocol=%s leader=%s [%s])", r.group, r.meta.Generation,
			strp(r.meta.Protocol), strp(r.meta.Leader), strings.Join(ms, " "))
	}
	return "?"
}

// render prints the fields of a request or response that matter here.
func render(msg any, topics *staticTopics) string {
	switch v := msg.(type) {
	case *kmsg.JoinGroupRequest:
		var ps []string
		for _, p := range v.Protocols {
			ps = append(ps, fmt.Sprintf("%s:%q", p.Name, p.Metadata))
		}
		return fmt.Sprintf("JoinGroup v%d group=%s member=%q instance=%s session=%d rebalance=%d protocols=%v",
			v.Version, v.Group, v.MemberID, strp(v.InstanceID), v.SessionTimeoutMillis, v.RebalanceTimeoutMillis, ps)
	case *kmsg.JoinGroupResponse:
		var ms []string
		for _, m := range v.Members {
			ms = append(ms, fmt.Sprintf("%s:%q", m.MemberID, m.ProtocolMetadata))
		}
		return fmt.Sprintf("JoinGroup %s gen=%d protocol=%s leader=%s member=%s skip=%v members=%v",
			errName(v.ErrorCode), v.Generation, strp(v.Protocol), v.LeaderID, v.MemberID, v.SkipAssignment, ms)
	case *kmsg.SyncGroupRequest:
		var as []string
		for _, a := range v.GroupAssignment {
			as = append(as, a.MemberID+"="+string(a.MemberAssignment))
		}
		return fmt.Sprintf("SyncGroup group=%s member=%s instance=%s gen=%d assignments=%v", v.Group, v.MemberID, strp(v.InstanceID), v.Generation, as)
	case *kmsg.SyncGroupResponse:
		return fmt.Sprintf("SyncGroup %s assignment=%q", errName(v.ErrorCode), v.MemberAssignment)
	case *kmsg.HeartbeatRequest:
		return fmt.Sprintf("Heartbeat group=%s member=%s instance=%s gen=%d", v.Group, v.MemberID, strp(v.InstanceID), v.Generation)
	case *kmsg.HeartbeatResponse:
		return "Heartbeat " + errName(v.ErrorCode)
	case *kmsg.LeaveGroupRequest:
		if v.Version < 3 {
			return fmt.Sprintf("LeaveGroup v%d group=%s member=%s", v.Version, v.Group, v.MemberID)
		}
		var ms []string
		for _, m := range v.Members {
			ms = append(ms, m.MemberID+"/"+strp(m.InstanceID))
		}
		return fmt.Sprintf("LeaveGroup group=%s members=%v", v.Group, ms)
	case *kmsg.LeaveGroupResponse:
		var ms []string
		for _, m := range v.Members {
			ms = append(ms, m.MemberID+"/"+strp(m.InstanceID)+":"+errName(m.ErrorCode))
		}
		return fmt.Sprintf("LeaveGroup %s members=%v", errName(v.ErrorCode), ms)
	case *kmsg.OffsetCommitRequest:
		var ps []string
		for _, t := range v.Topics {
			for _, p := range t.Partitions {
				ps = append(ps, fmt.Sprintf("%s/%d=%d", t.Topic, p.Partition, p.Offset))
			}
		}
		return fmt.Sprintf("OffsetCommit v%d group=%s member=%q instance=%s gen=%d %v", v.Version, v.Group, v.MemberID, strp(v.InstanceID), v.Generation, ps)
	case *kmsg.OffsetCommitResponse:
		var ps []string
		for _, t := range v.Topics {
			for _, p := range t.Partitions {
				ps = append(ps, fmt.Sprintf("%s/%d:%s", t.Topic, p.Partition, errName(p.ErrorCode)))
			}
		}
		return fmt.Sprintf("OffsetCommit %v", ps)
	case *kmsg.OffsetFetchRequest:
		if v.Version < 8 {
			var ts []string
			for _, t := range v.Topics {
				ts = append(ts, fmt.Sprintf("%s%v", t.Topic, t.Partitions))
			}
			return fmt.Sprintf("OffsetFetch v%d group=%s %v", v.Version, v.Group, ts)
		}
		var gs []string
		for _, g := range v.Groups {
			var ts []string
			for _, t := range g.Topics {
				ts = append(ts, fmt.Sprintf("%s%v", t.Topic, t.Partitions))
			}
			if g.Topics == nil {
				ts = []string{"all"}
			}
			gs = append(gs, fmt.Sprintf("%s(member=%s epoch=%d)%v", g.Group, strp(g.MemberID), g.MemberEpoch, ts))
		}
		return fmt.Sprintf("OffsetFetch v%d stable=%v %v", v.Version, v.RequireStable, gs)
	case *kmsg.OffsetFetchResponse:
		if v.Version < 8 {
			var ps []string
			for _, t := range v.Topics {
				for _, p := range t.Partitions {
					ps = append(ps, fmt.Sprintf("%s/%d=%d:%s", t.Topic, p.Partition, p.Offset, errName(p.ErrorCode)))
				}
			}
			return fmt.Sprintf("OffsetFetch %s %v", errName(v.ErrorCode), ps)
		}
		var gs []string
		for _, g := range v.Groups {
			var ps []string
			for _, t := range g.Topics {
				for _, p := range t.Partitions {
					s := fmt.Sprintf("%s/%d=%d", t.Topic, p.Partition, p.Offset)
					if p.Metadata != nil && *p.Metadata != "" {
						s += "(" + *p.Metadata + ")"
					}
					if p.ErrorCode != 0 {
						s += ":" + errName(p.ErrorCode)
					}
					ps = append(ps, s)
				}
			}
			gs = append(gs, fmt.Sprintf("%s:%s%v", g.Group, errName(g.ErrorCode), ps))
		}
		return fmt.Sprintf("OffsetFetch %v", gs)
	case *kmsg.OffsetDeleteRequest:
		var ps []string
		for _, t := range v.Topics {
			for _, p := range t.Partitions {
				ps = append(ps, fmt.Sprintf("%s/%d", t.Topic, p.Partition))
			}
		}
		return fmt.Sprintf("OffsetDelete group=%s %v", v.Group, ps)
	case *kmsg.OffsetDeleteResponse:
		var ps []string
		for _, t := range v.Topics {
			for _, p := range t.Partitions {
				ps = append(ps, fmt.Sprintf("%s/%d:%s", t.Topic, p.Partition, errName(p.ErrorCode)))
			}
		}
		return fmt.Sprintf("OffsetDelete %s %v", errName(v.ErrorCode), ps)
	case *kmsg.DescribeGroupsRequest:
		return fmt.Sprintf("DescribeGroups v%d %v", v.Version, v.Groups)
	case *kmsg.DescribeGroupsResponse:
		var gs []string
		for _, g := range v.Groups {
			var ms []string
			for _, m := range g.Members {
				ms = append(ms, fmt.Sprintf("%s(%s %s)", m.MemberID, m.ClientID, m.ClientHost))
			}
			gs = append(gs, fmt.Sprintf("%s:%s state=%s type=%s protocol=%s members=%v", g.Group, errName(g.ErrorCode), g.State, g.ProtocolType, g.Protocol, ms))
		}
		return fmt.Sprintf("DescribeGroups %v", gs)
	case *kmsg.ListGroupsRequest:
		return fmt.Sprintf("ListGroups states=%v types=%v", v.StatesFilter, v.TypesFilter)
	case *kmsg.ListGroupsResponse:
		var gs []string
		for _, g := range v.Groups {
			gs = append(gs, fmt.Sprintf("%s(%s %s %s)", g.Group, g.GroupType, g.ProtocolType, g.GroupState))
		}
		return fmt.Sprintf("ListGroups %s %v", errName(v.ErrorCode), gs)
	case *kmsg.DeleteGroupsRequest:
		return fmt.Sprintf("DeleteGroups %v", v.Groups)
	case *kmsg.DeleteGroupsResponse:
		var gs []string
		for _, g := range v.Groups {
			gs = append(gs, g.Group+":"+errName(g.ErrorCode))
		}
		return fmt.Sprintf("DeleteGroups %v", gs)
	case *kmsg.ConsumerGroupHeartbeatRequest:
		var owned []string
		for _, t := range v.Topics {
			owned = append(owned, fmt.Sprintf("%s%v", topicName(t.TopicID, topics), t.Partitions))
		}
		o := "null"
		if v.Topics != nil {
			o = "[" + strings.Join(owned, " ") + "]"
		}
		subs := "null"
		if v.SubscribedTopicNames != nil {
			subs = fmt.Sprint(v.SubscribedTopicNames)
		}
		return fmt.Sprintf("ConsumerGroupHeartbeat group=%s member=%s epoch=%d instance=%s subs=%s regex=%s assignor=%s owned=%s",
			v.Group, v.MemberID, v.MemberEpoch, strp(v.InstanceID), subs, strp(v.SubscribedTopicRegex), strp(v.ServerAssignor), o)
	case *kmsg.ConsumerGroupHeartbeatResponse:
		return fmt.Sprintf("ConsumerGroupHeartbeat %s member=%s epoch=%d interval=%d assignment=%s",
			errName(v.ErrorCode), strp(v.MemberID), v.MemberEpoch, v.HeartbeatIntervalMillis, renderAssignment(v.Assignment, topics))
	case *kmsg.ConsumerGroupDescribeRequest:
		return fmt.Sprintf("ConsumerGroupDescribe %v", v.Groups)
	case *kmsg.ConsumerGroupDescribeResponse:
		var gs []string
		for _, g := range v.Groups {
			var ms []string
			for _, m := range g.Members {
				ms = append(ms, fmt.Sprintf("%s(epoch=%d has=%s target=%s)", m.MemberID, m.MemberEpoch, renderKAssignment(m.Assignment), renderKAssignment(m.TargetAssignment)))
			}
			gs = append(gs, fmt.Sprintf("%s:%s state=%s epoch=%d assignmentEpoch=%d assignor=%s members=%v",
				g.Group, errName(g.ErrorCode), g.State, g.Epoch, g.AssignmentEpoch, g.AssignorName, ms))
		}
		return fmt.Sprintf("ConsumerGroupDescribe %v", gs)
	}
	return fmt.Sprintf("%T", msg)
}

// Request builders.

func joinReq(group, member string, instance *string, protocols ...string) *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Version = 9
	req.Group = group
	req.MemberID = member
	req.InstanceID = instance
	req.SessionTimeoutMillis = 10000
	req.RebalanceTimeoutMillis = 30000
	req.ProtocolType = "consumer"
	for _, p := range protocols {
		name, meta, _ := strings.Cut(p, ":")
		jp := kmsg.NewJoinGroupRequestProtocol()
		jp.Name, jp.Metadata = name, []byte(meta)
		req.Protocols = append(req.Protocols, jp)
	}
	return req
}

func syncReq(group, member string, instance *string, gen int32, assignments ...string) *kmsg.SyncGroupRequest {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Version = 5
	req.Group, req.MemberID, req.InstanceID, req.Generation = group, member, instance, gen
	req.ProtocolType = kmsg.StringPtr("consumer")
	for _, a := range assignments {
		id, data, _ := strings.Cut(a, "=")
		ga := kmsg.NewSyncGroupRequestGroupAssignment()
		ga.MemberID, ga.MemberAssignment = id, []byte(data)
		req.GroupAssignment = append(req.GroupAssignment, ga)
	}
	return req
}

func hbReq(group, member string, instance *string, gen int32) *kmsg.HeartbeatRequest {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Version = 4
	req.Group, req.MemberID, req.InstanceID, req.Generation = group, member, instance, gen
	return req
}

func commitReq(group, member string, instance *string, gen int32, offsets ...string) *kmsg.OffsetCommitRequest {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Version = 9
	req.Group, req.MemberID, req.InstanceID, req.Generation = group, member, instance, gen
	for _, o := range offsets {
		var topic string
		var p int32
		var off int64
		tp, offStr, _ := strings.Cut(o, "=")
		i := strings.LastIndexByte(tp, '/')
		topic = tp[:i]
		fmt.Sscan(tp[i+1:], &p)
		fmt.Sscan(offStr, &off)
		var rt *kmsg.OffsetCommitRequestTopic
		for k := range req.Topics {
			if req.Topics[k].Topic == topic {
				rt = &req.Topics[k]
			}
		}
		if rt == nil {
			req.Topics = append(req.Topics, kmsg.NewOffsetCommitRequestTopic())
			rt = &req.Topics[len(req.Topics)-1]
			rt.Topic = topic
		}
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = p, off
		rt.Partitions = append(rt.Partitions, rp)
	}
	return req
}

func fetchReq(group string, stable bool, topics map[string][]int32) *kmsg.OffsetFetchRequest {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Version = 9
	req.RequireStable = stable
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = group
	if topics != nil {
		names := make([]string, 0, len(topics))
		for n := range topics {
			names = append(names, n)
		}
		sort.Strings(names)
		rg.Topics = []kmsg.OffsetFetchRequestGroupTopic{}
		for _, n := range names {
			rt := kmsg.NewOffsetFetchRequestGroupTopic()
			rt.Topic, rt.Partitions = n, topics[n]
			rg.Topics = append(rg.Topics, rt)
		}
	}
	req.Groups = append(req.Groups, rg)
	return req
}

func cghReq(group, member string, epoch int32, subs []string, owned map[string][]int32, topics *staticTopics) *kmsg.ConsumerGroupHeartbeatRequest {
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Version = 1
	req.Group, req.MemberID, req.MemberEpoch = group, member, epoch
	req.RebalanceTimeoutMillis = -1
	if epoch == 0 || subs != nil {
		req.RebalanceTimeoutMillis = 30000 // with subs and owned: a full request
	}
	req.SubscribedTopicNames = subs
	if owned != nil {
		req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
		names := make([]string, 0, len(owned))
		for n := range owned {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			t := kmsg.NewConsumerGroupHeartbeatRequestTopic()
			t.TopicID = topics.byName[n].ID
			t.Partitions = owned[n]
			req.Topics = append(req.Topics, t)
		}
	}
	return req
}

func ptr(s string) *string { return &s }
