package share

// DescribeShareGroupOffsets, AlterShareGroupOffsets and
// DeleteShareGroupOffsets: the SPSO of each share partition as an
// administrator sees it.

import (
	"slices"

	"github.com/exactly/exactly/internal/group"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// lagLocked is the records from SPSO to the high watermark not yet
// settled (Acknowledged or Archived in the window count as settled).
func (c *Coordinator) lagLocked(p *Partition, topic string, idx int32) int64 {
	src := c.opts.Partition(topic, idx)
	if src == nil {
		return -1
	}
	hw := src.HighWatermark()
	lag := max(hw-p.SPSO, 0)
	for i, r := range p.recs {
		if p.SPSO+int64(i) >= hw {
			break
		}
		if r.state == Acknowledged || r.state == Archived {
			lag--
		}
	}
	return max(lag, 0)
}

// DescribeOffsets serves DescribeShareGroupOffsets; denied reports topics
// the principal may not DESCRIBE (left out of "all topics" answers).
func (c *Coordinator) DescribeOffsets(req *kmsg.DescribeShareGroupOffsetsRequest, denied func(topic string) bool) *kmsg.DescribeShareGroupOffsetsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeShareGroupOffsetsResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rg := range req.Groups {
		g := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
		g.GroupID = rg.GroupID
		partitionResult := func(topic string, id [16]byte, idx int32) kmsg.DescribeShareGroupOffsetsResponseGroupTopicPartition {
			rp := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopicPartition()
			rp.Partition = idx
			rp.StartOffset, rp.LeaderEpoch, rp.Lag = -1, -1, -1
			if p := c.parts[partitionKey{rg.GroupID, id, idx}]; p != nil {
				rp.StartOffset, rp.LeaderEpoch = p.SPSO, 0
				rp.Lag = c.lagLocked(p, topic, idx)
			}
			return rp
		}
		if rg.Topics == nil {
			byTopic := map[[16]byte][]int32{}
			for k := range c.parts {
				if k.Group == rg.GroupID {
					byTopic[k.TopicID] = append(byTopic[k.TopicID], k.Partition)
				}
			}
			var names []string
			ids := map[string][16]byte{}
			for id := range byTopic {
				info, ok := c.opts.Topics.TopicByID(id)
				if !ok || (denied != nil && denied(info.Name)) {
					continue
				}
				names = append(names, info.Name)
				ids[info.Name] = id
			}
			slices.Sort(names)
			for _, name := range names {
				rt := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopic()
				rt.Topic, rt.TopicID = name, ids[name]
				idxs := byTopic[ids[name]]
				slices.Sort(idxs)
				for _, idx := range idxs {
					rt.Partitions = append(rt.Partitions, partitionResult(name, rt.TopicID, idx))
				}
				g.Topics = append(g.Topics, rt)
			}
			resp.Groups = append(resp.Groups, g)
			continue
		}
		for _, t := range rg.Topics {
			rt := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopic()
			rt.Topic = t.Topic
			info, ok := c.opts.Topics.TopicByName(t.Topic)
			for _, idx := range t.Partitions {
				var rp kmsg.DescribeShareGroupOffsetsResponseGroupTopicPartition
				switch {
				case denied != nil && denied(t.Topic):
					rp = kmsg.NewDescribeShareGroupOffsetsResponseGroupTopicPartition()
					rp.Partition = idx
					rp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				case !ok || idx < 0 || idx >= info.Partitions:
					rp = kmsg.NewDescribeShareGroupOffsetsResponseGroupTopicPartition()
					rp.Partition = idx
					rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				default:
					rt.TopicID = info.ID
					rp = partitionResult(t.Topic, info.ID, idx)
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			g.Topics = append(g.Topics, rt)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// AlterOffsets serves AlterShareGroupOffsets: the group must have no
// members; each partition's window is dropped and SPSO set (-1: the high
// watermark, -2: the log start). Durable before the answer.
func (c *Coordinator) AlterOffsets(req *kmsg.AlterShareGroupOffsetsRequest, denied func(topic string) bool) *kmsg.AlterShareGroupOffsetsResponse {
	resp := req.ResponseKind().(*kmsg.AlterShareGroupOffsetsResponse)
	c.mu.Lock()
	if g := c.groups[req.GroupID]; g != nil && len(g.members) > 0 {
		c.mu.Unlock()
		resp.ErrorCode = kerr.NonEmptyGroup.Code
		return resp
	}
	if c.failed != nil {
		c.mu.Unlock()
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	if !c.knownLocked(req.GroupID) && c.groupCountLocked() >= c.cfg.MaxGroups {
		c.mu.Unlock()
		resp.ErrorCode = kerr.GroupMaxSizeReached.Code
		return resp
	}
	var extra []group.KV
	if c.groups[req.GroupID] == nil {
		c.groups[req.GroupID] = &shareGroup{name: req.GroupID, members: map[string]*member{}}
		extra = append(extra, groupKV(req.GroupID, true))
	}
	dirty := map[partitionKey]bool{}
	for _, t := range req.Topics {
		rt := kmsg.NewAlterShareGroupOffsetsResponseTopic()
		rt.Topic = t.Topic
		info, ok := c.opts.Topics.TopicByName(t.Topic)
		if ok {
			rt.TopicID = info.ID
		}
		for _, p := range t.Partitions {
			rp := kmsg.NewAlterShareGroupOffsetsResponseTopicPartition()
			rp.Partition = p.Partition
			var src Source
			if ok && p.Partition >= 0 && p.Partition < info.Partitions {
				src = c.opts.Partition(t.Topic, p.Partition)
			}
			switch {
			case denied != nil && denied(t.Topic):
				rp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case src == nil:
				rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case p.StartOffset < -2:
				rp.ErrorCode = kerr.InvalidRequest.Code
			default:
				off := p.StartOffset
				switch {
				case off == -1:
					off = src.HighWatermark()
				case off == -2:
					off = src.LogStartOffset()
				}
				if off < src.LogStartOffset() || off > src.HighWatermark() {
					rp.ErrorCode = kerr.OffsetOutOfRange.Code
					break
				}
				k := partitionKey{req.GroupID, info.ID, p.Partition}
				sp := c.parts[k]
				if sp == nil {
					sp = &Partition{}
					c.parts[k] = sp
				}
				sp.Reset(off)
				dirty[k] = true
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	end, err := c.persistLocked(dirty, extra...)
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	if err != nil {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
	}
	return resp
}

// groupCountLocked counts share groups (members or state).
func (c *Coordinator) groupCountLocked() int {
	names := map[string]bool{}
	for n := range c.groups {
		names[n] = true
	}
	for k := range c.parts {
		names[k.Group] = true
	}
	return len(names)
}

// DeleteOffsets serves DeleteShareGroupOffsets: drops the share-partition
// state of whole topics of a group without members.
func (c *Coordinator) DeleteOffsets(req *kmsg.DeleteShareGroupOffsetsRequest, denied func(topic string) bool) *kmsg.DeleteShareGroupOffsetsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteShareGroupOffsetsResponse)
	c.mu.Lock()
	if g := c.groups[req.GroupID]; g != nil && len(g.members) > 0 {
		c.mu.Unlock()
		resp.ErrorCode = kerr.NonEmptyGroup.Code
		return resp
	}
	if !c.knownLocked(req.GroupID) {
		c.mu.Unlock()
		resp.ErrorCode = kerr.GroupIDNotFound.Code
		return resp
	}
	dirty := map[partitionKey]bool{}
	for _, t := range req.Topics {
		rt := kmsg.NewDeleteShareGroupOffsetsResponseTopic()
		rt.Topic = t.Topic
		info, ok := c.opts.Topics.TopicByName(t.Topic)
		switch {
		case denied != nil && denied(t.Topic):
			rt.ErrorCode = kerr.TopicAuthorizationFailed.Code
		case !ok:
			rt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		default:
			rt.TopicID = info.ID
			for k := range c.parts {
				if k.Group == req.GroupID && k.TopicID == info.ID {
					c.dropPartLocked(k)
					dirty[k] = true
				}
			}
		}
		resp.Topics = append(resp.Topics, rt)
	}
	end, err := c.persistLocked(dirty)
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	if err != nil {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
	}
	return resp
}
