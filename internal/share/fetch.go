package share

// Share sessions, ShareFetch (acquisition with piggybacked
// acknowledgements) and ShareAcknowledge.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/log"
	rec "github.com/exactly/exactly/internal/record"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type sessionKey struct{ group, member string }

type tidp struct {
	id [16]byte
	p  int32
}

// session is a share session (KIP-932): the partitions a member fetches
// from this broker and the epoch its next request must carry.
type session struct {
	epoch    int32 // expected next
	parts    map[tidp]struct{}
	lastUsed time.Time
	rotate   int // first partition of the next fetch (fairness)
}

// maxSessionPartitions bounds one session's partitions (hostile input);
// only partitions of existing topics are ever added.
const maxSessionPartitions = 100000

func newMemberID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func nextEpoch(e int32) int32 {
	if e == math.MaxInt32 {
		return 1
	}
	return e + 1
}

// closeSessionLocked ends a session; the member's acquisitions in its
// group are released (the member can no longer acknowledge them).
func (c *Coordinator) closeSessionLocked(k sessionKey, _ *session) {
	delete(c.sessions, k)
	released := false
	for pk, p := range c.parts {
		if pk.Group == k.group && p.ReleaseMember(k.member, c.cfg.DeliveryCountLimit) {
			released = true
		}
	}
	if released {
		c.wakeLocked()
	}
}

// Limits are the broker's per-request bounds and identity for ShareFetch.
type Limits struct {
	MaxBytes          int // fetch.max.bytes
	PartitionMaxBytes int // fetch.partition.max.bytes
	MaxWait           time.Duration
	NodeID            int32
	// TopicDenied reports whether the principal may not READ a topic.
	TopicDenied func(topic string) bool
}

// ackBatch is one acknowledgement batch in either request's shape.
type ackBatch struct {
	first, last int64
	types       []int8
}

// sessionStep validates a request's session epoch and returns the
// session (nil with epoch -1 means: close after the acknowledgements).
// Called with mu held.
func (c *Coordinator) sessionStepLocked(k sessionKey, epoch int32, isFetch, hasAcks bool, now time.Time) (*session, int16) {
	s := c.sessions[k]
	switch {
	case epoch == 0:
		if !isFetch {
			return nil, kerr.InvalidShareSessionEpoch.Code
		}
		if hasAcks {
			return nil, kerr.InvalidRequest.Code
		}
		if s != nil {
			c.closeSessionLocked(k, s)
		} else if len(c.sessions) >= c.cfg.MaxSessions {
			return nil, kerr.ShareSessionLimitReached.Code
		}
		s = &session{epoch: 1, parts: map[tidp]struct{}{}}
		c.sessions[k] = s
	case s == nil:
		return nil, kerr.ShareSessionNotFound.Code
	case epoch == -1:
	case epoch != s.epoch:
		return nil, kerr.InvalidShareSessionEpoch.Code
	default:
		s.epoch = nextEpoch(s.epoch)
	}
	s.lastUsed = now
	return s, 0
}

// ackLocked applies a partition's acknowledgement batches for member; the
// code is the first failure (INVALID_RECORD_STATE, INVALID_REQUEST).
func (c *Coordinator) ackLocked(pk partitionKey, member string, batches []ackBatch, renewOK bool, now time.Time, dirty map[partitionKey]bool) int16 {
	if !renewOK {
		for _, b := range batches {
			if slices.Contains(b.types, AckRenew) {
				return kerr.InvalidRequest.Code // RENEW is v2+
			}
		}
	}
	p := c.parts[pk]
	if p == nil {
		return kerr.InvalidRecordState.Code
	}
	var code int16
	renew := now.Add(c.lockDurationLocked(pk.Group))
	// A window at group.share.partition.max.record.locks leaves fetches
	// waiting. Members' own next fetches carry their acknowledgements and
	// take the room those free; waiters are woken only once the window
	// drained to half, as when members stop fetching. Waking them for
	// every freed chunk made acquisitions small, and each acquisition is
	// an fsync: 16 consumers on one partition read 4× slower.
	half := c.cfg.MaxRecordLocks / 2
	above := p.InFlight() > half
	released := false
	for _, b := range batches {
		if err := p.Acknowledge(member, b.first, b.last, b.types, c.cfg.DeliveryCountLimit, renew); err != nil {
			if code == 0 {
				code = kerr.InvalidRecordState.Code
				if ErrInvalidBatch(err) {
					code = kerr.InvalidRequest.Code
				}
			}
			continue
		}
		dirty[pk] = true
		if slices.Contains(b.types, AckRelease) {
			released = true
		}
	}
	if released || (above && p.InFlight() <= half) {
		c.wakeLocked()
	}
	return code
}

// Fetch serves ShareFetch. It returns once records were acquired (their
// delivery counts durable), acknowledgements were applied (durable), an
// error occurred, or the long poll ended.
func (c *Coordinator) Fetch(ctx context.Context, req *kmsg.ShareFetchRequest, lim Limits) *kmsg.ShareFetchResponse {
	resp := req.ResponseKind().(*kmsg.ShareFetchResponse)
	if req.GroupID == nil || *req.GroupID == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	if req.MemberID == nil || *req.MemberID == "" || len(*req.MemberID) > maxMemberIDBytes {
		resp.ErrorCode = kerr.InvalidRequest.Code
		resp.ErrorMessage = kmsg.StringPtr("MemberId must be set.")
		return resp
	}
	grp, member := *req.GroupID, *req.MemberID
	k := sessionKey{grp, member}
	hasAcks := false
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			if len(p.AcknowledgementBatches) > 0 {
				hasAcks = true
			}
		}
	}

	c.mu.Lock()
	now := c.now()
	resp.AcquisitionLockTimeoutMillis = int32(c.lockDurationLocked(grp) / time.Millisecond)
	if c.failed != nil {
		c.mu.Unlock()
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	if c.groups[grp] == nil {
		// Only existing share groups (bounded by group.share.max.groups)
		// get share-partition state: a fetch must not create groups.
		c.mu.Unlock()
		resp.ErrorCode = kerr.GroupIDNotFound.Code
		return resp
	}
	s, code := c.sessionStepLocked(k, req.ShareSessionEpoch, true, hasAcks, now)
	if code != 0 {
		c.mu.Unlock()
		resp.ErrorCode = code
		return resp
	}
	// Partitions in the answer, in request order, then any others of the
	// session that get records.
	parts := map[tidp]*kmsg.ShareFetchResponseTopicPartition{}
	var order []tidp
	part := func(id tidp) *kmsg.ShareFetchResponseTopicPartition {
		if rp := parts[id]; rp != nil {
			return rp
		}
		rp := kmsg.NewShareFetchResponseTopicPartition()
		rp.Partition = id.p
		rp.CurrentLeader.LeaderID = lim.NodeID
		parts[id] = &rp
		order = append(order, id)
		return &rp
	}
	dirty := map[partitionKey]bool{}
	for _, t := range req.Topics {
		info, known := c.opts.Topics.TopicByID(t.TopicID)
		for _, p := range t.Partitions {
			id := tidp{t.TopicID, p.Partition}
			rp := part(id)
			switch {
			case !known || p.Partition < 0 || p.Partition >= info.Partitions:
				rp.ErrorCode = kerr.UnknownTopicID.Code
				if !known {
					continue
				}
				rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				continue
			case lim.TopicDenied != nil && lim.TopicDenied(info.Name):
				rp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				continue
			}
			if s != nil && req.ShareSessionEpoch != -1 && len(s.parts) < maxSessionPartitions {
				s.parts[id] = struct{}{}
			}
			if len(p.AcknowledgementBatches) > 0 {
				batches := make([]ackBatch, len(p.AcknowledgementBatches))
				for i, b := range p.AcknowledgementBatches {
					batches[i] = ackBatch{b.FirstOffset, b.LastOffset, b.AcknowledgeTypes}
				}
				rp.AcknowledgeErrorCode = c.ackLocked(partitionKey{grp, t.TopicID, p.Partition}, member, batches, req.Version >= 2, now, dirty)
			}
		}
	}
	for _, ft := range req.ForgottenTopicsData {
		for _, p := range ft.Partitions {
			delete(s.parts, tidp{ft.TopicID, p})
		}
	}
	if req.ShareSessionEpoch == -1 {
		c.closeSessionLocked(k, s)
		s = nil
	}
	end, err := c.persistLocked(dirty)
	var fetchFrom []tidp
	if s != nil && !req.IsRenewAck {
		for id := range s.parts {
			fetchFrom = append(fetchFrom, id)
		}
		slices.SortFunc(fetchFrom, func(a, b tidp) int {
			if c := strings.Compare(string(a.id[:]), string(b.id[:])); c != 0 {
				return c
			}
			return int(a.p - b.p)
		})
		if n := len(fetchFrom); n > 0 {
			r := s.rotate % n
			fetchFrom = append(fetchFrom[r:], fetchFrom[:r]...)
			s.rotate++
		}
	}
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	if err != nil {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return c.finishFetch(resp, parts, order)
	}
	if len(fetchFrom) == 0 {
		return c.finishFetch(resp, parts, order)
	}

	maxRecords := 500
	if req.Version >= 1 && req.MaxRecords > 0 {
		maxRecords = int(req.MaxRecords)
	}
	budget := lim.MaxBytes
	if req.MaxBytes > 0 {
		budget = min(budget, int(req.MaxBytes))
	}
	deadline := time.Now().Add(min(time.Duration(max(req.MaxWaitMillis, 0))*time.Millisecond, lim.MaxWait))
	for {
		c.mu.Lock()
		avail := c.avail
		c.mu.Unlock()
		got, busy, watch, ferr := c.acquireAll(grp, member, fetchFrom, maxRecords, budget, lim, part)
		if ferr != nil {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return c.finishFetch(resp, parts, order)
		}
		// A fetch carrying acknowledgements answers without long-polling,
		// but still waits for its turn at a partition another fetch was
		// acquiring from (a moment: one read and acquisition).
		if got || (hasAcks && busy == nil) || !time.Now().Before(deadline) || ctx.Err() != nil {
			return c.finishFetch(resp, parts, order)
		}
		if held := time.Now().Add(fullWindowHold); held.Before(deadline) && busy == nil && c.holdsInFullWindow(grp, member, fetchFrom) {
			// Only acknowledgements free a full window, and this
			// member's own may be waiting for this answer: clients
			// send them with their next fetch. Hold it only briefly,
			// so a client that fetches again at once does not spin.
			deadline = held
		}
		wake := make(chan struct{}, 1)
		var stops []func()
		for _, src := range watch {
			stops = append(stops, src.Watch(wake))
		}
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-avail:
		case <-busy:
		case <-timer.C:
		case <-ctx.Done():
		case <-c.quit:
			deadline = time.Now()
		}
		timer.Stop()
		for _, stop := range stops {
			stop()
		}
	}
}

// fullWindowHold bounds the long poll of a fetch whose member holds
// records in a full window (see Fetch).
const fullWindowHold = 10 * time.Millisecond

// holdsInFullWindow reports whether member holds acquired records in a
// share partition of from whose window is at
// group.share.partition.max.record.locks.
func (c *Coordinator) holdsInFullWindow(grp, member string, from []tidp) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range from {
		p := c.parts[partitionKey{grp, id.id, id.p}]
		if p != nil && p.InFlight() >= c.cfg.MaxRecordLocks && p.Holds(member) {
			return true
		}
	}
	return false
}

func (c *Coordinator) finishFetch(resp *kmsg.ShareFetchResponse, parts map[tidp]*kmsg.ShareFetchResponseTopicPartition, order []tidp) *kmsg.ShareFetchResponse {
	idx := map[[16]byte]int{}
	for _, id := range order {
		i, ok := idx[id.id]
		if !ok {
			t := kmsg.NewShareFetchResponseTopic()
			t.TopicID = id.id
			resp.Topics = append(resp.Topics, t)
			i = len(resp.Topics) - 1
			idx[id.id] = i
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, *parts[id])
	}
	return resp
}

// acquireAll acquires records from the session's partitions within the
// record and byte budgets, makes the acquisitions durable, and reports
// whether anything was acquired, a partition's turn to wait for when
// another fetch was acquiring from it (nil if none), and which partitions
// to watch.
func (c *Coordinator) acquireAll(grp, member string, from []tidp, maxRecords, budget int, lim Limits, part func(tidp) *kmsg.ShareFetchResponseTopicPartition) (got bool, busy <-chan struct{}, watch []Source, err error) {
	dirty := map[partitionKey]bool{}
	for _, id := range from {
		if maxRecords <= 0 || budget <= 0 {
			break
		}
		info, ok := c.opts.Topics.TopicByID(id.id)
		if !ok || id.p >= info.Partitions || (lim.TopicDenied != nil && lim.TopicDenied(info.Name)) {
			continue
		}
		src := c.opts.Partition(info.Name, id.p)
		if src == nil {
			continue
		}
		watch = append(watch, src)
		pk := partitionKey{grp, id.id, id.p}
		data, ranges, turn, err := c.acquireOne(pk, member, src, maxRecords, min(budget, lim.PartitionMaxBytes), dirty)
		if turn != nil && busy == nil {
			busy = turn
		}
		if err != nil {
			rp := part(id)
			rp.ErrorCode = kerr.KafkaStorageError.Code
			continue
		}
		if len(ranges) == 0 {
			continue
		}
		got = true
		rp := part(id)
		rp.Records = append(rp.Records, data...)
		for _, r := range ranges {
			ar := kmsg.NewShareFetchResponseTopicPartitionAcquiredRecord()
			ar.FirstOffset, ar.LastOffset, ar.DeliveryCount = r.First, r.Last, r.Count
			rp.AcquiredRecords = append(rp.AcquiredRecords, ar)
			maxRecords -= int(r.Last - r.First + 1)
		}
		budget -= len(data)
	}
	c.mu.Lock()
	end, err := c.persistLocked(dirty)
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	return got, busy, watch, err
}

// acquireOne acquires from one share partition, one fetch at a time
// (Kafka's share-partition fetch lock): fetches that read the same records
// at once would all but one acquire nothing, and find nothing new to wake
// them. A fetch that finds another acquiring gets busy, closed when that
// one is done.
func (c *Coordinator) acquireOne(pk partitionKey, member string, src Source, maxRecords, maxBytes int, dirty map[partitionKey]bool) (out []byte, ranges []AcquiredRange, busy <-chan struct{}, err error) {
	c.mu.Lock()
	if turn := c.fetching[pk]; turn != nil {
		c.mu.Unlock()
		return nil, nil, turn, nil
	}
	turn := make(chan struct{})
	c.fetching[pk] = turn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.fetching, pk)
		c.mu.Unlock()
		close(turn)
	}()
	out, ranges, err = c.acquireTurn(pk, member, src, maxRecords, maxBytes, dirty)
	return out, ranges, nil, err
}

// acquireTurn is acquireOne's turn: reads until it acquires something or a
// read moves the window no further. A read that held only records never
// delivered (control records, aborted transactions under read_committed)
// archives them and reads on: no append would wake a fetch for the
// records after them.
func (c *Coordinator) acquireTurn(pk partitionKey, member string, src Source, maxRecords, maxBytes int, dirty map[partitionKey]bool) ([]byte, []AcquiredRange, error) {
	for {
		out, ranges, skipped, err := c.acquirePass(pk, member, src, maxRecords, maxBytes, dirty)
		if err != nil || len(ranges) > 0 || !skipped {
			return out, ranges, err
		}
	}
}

// acquirePass is one read and acquisition: Available records in the
// window first (redeliveries), then new records past SPEO. The log is read
// outside the lock; acquisition re-checks every offset's state under it
// (members' acknowledgements, expiries and resets go on meanwhile).
// skipped reports that the window grew by records never delivered.
func (c *Coordinator) acquirePass(pk partitionKey, member string, src Source, maxRecords, maxBytes int, dirty map[partitionKey]bool) (_ []byte, _ []AcquiredRange, skipped bool, _ error) {
	c.mu.Lock()
	now := c.now()
	p := c.parts[pk]
	readCommitted := c.groupConfigLocked(pk.Group, "share.isolation.level") == "read_committed"
	if p == nil {
		p = &Partition{}
		start := src.HighWatermark()
		if c.groupConfigLocked(pk.Group, "share.auto.offset.reset") == "earliest" {
			start = src.LogStartOffset()
		}
		p.Reset(start)
		c.parts[pk] = p
		dirty[pk] = true
	}
	if p.TrimTo(src.LogStartOffset()) {
		dirty[pk] = true
	}
	if p.Expire(now, c.cfg.DeliveryCountLimit) {
		c.wakeLocked()
	}
	start := p.NextAvailable()
	if start >= p.SPEO() && p.InFlight() >= c.cfg.MaxRecordLocks {
		c.mu.Unlock()
		return nil, nil, false, nil
	}
	c.mu.Unlock()

	data, err := src.Read(start, max(maxBytes, 1), readCommitted)
	if errors.Is(err, log.ErrOffsetOutOfRange) {
		// The log moved under the window (truncated or recreated):
		// start again at the log start.
		c.mu.Lock()
		if cur := c.parts[pk]; cur == p {
			p.Reset(src.LogStartOffset())
			dirty[pk] = true
		}
		c.mu.Unlock()
		return nil, nil, false, nil
	}
	if err != nil || len(data) == 0 {
		return nil, nil, false, err
	}
	var aborted []abortedRange
	if readCommitted {
		last := start
		rec.Split(data, func(h rec.Header, _ []byte) error { last = h.LastOffset(); return nil })
		for _, a := range src.AbortedTxns(start, last+1) {
			aborted = append(aborted, abortedRange{a.ProducerID, a.FirstOffset, a.LastOffset})
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parts[pk] != p {
		return nil, nil, false, nil // deleted or reset meanwhile
	}
	lockUntil := c.now().Add(c.lockDurationLocked(pk.Group))
	acq := p.Acquire(member, lockUntil, maxRecords, c.cfg.MaxRecordLocks, c.cfg.DeliveryCountLimit)
	speo := p.SPEO()
	var out []byte
	rec.Split(data, func(h rec.Header, batch []byte) error {
		if acq.left <= 0 {
			return errStop
		}
		skip := h.IsControl() || (readCommitted && h.IsTransactional() && isAborted(aborted, h.ProducerID, h.BaseOffset))
		used := false
		for off := h.BaseOffset; off <= h.LastOffset(); off++ {
			if skip {
				if !acq.Skip(off) {
					break
				}
				continue
			}
			if acq.Full(off) {
				break
			}
			if acq.Offer(off) {
				used = true
			}
		}
		if used {
			out = append(out, batch[:h.Size()]...)
		}
		return nil
	})
	acq.Done()
	if len(acq.Ranges) > 0 || p.SPEO() != speo {
		dirty[pk] = true
	}
	return out, acq.Ranges, p.SPEO() != speo && len(acq.Ranges) == 0, nil
}

var errStop = errors.New("stop")

type abortedRange struct {
	pid         int64
	first, last int64
}

func isAborted(as []abortedRange, pid, off int64) bool {
	for _, a := range as {
		if a.pid == pid && a.first <= off && off <= a.last {
			return true
		}
	}
	return false
}

// Acknowledge serves ShareAcknowledge: acknowledgements are durable
// before the answer.
func (c *Coordinator) Acknowledge(req *kmsg.ShareAcknowledgeRequest, lim Limits) *kmsg.ShareAcknowledgeResponse {
	resp := req.ResponseKind().(*kmsg.ShareAcknowledgeResponse)
	if req.GroupID == nil || *req.GroupID == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	if req.MemberID == nil || *req.MemberID == "" || len(*req.MemberID) > maxMemberIDBytes {
		resp.ErrorCode = kerr.InvalidRequest.Code
		return resp
	}
	grp, member := *req.GroupID, *req.MemberID
	k := sessionKey{grp, member}
	c.mu.Lock()
	now := c.now()
	resp.AcquisitionLockTimeoutMillis = int32(c.lockDurationLocked(grp) / time.Millisecond)
	if c.failed != nil {
		c.mu.Unlock()
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	s, code := c.sessionStepLocked(k, req.ShareSessionEpoch, false, true, now)
	if code != 0 {
		c.mu.Unlock()
		resp.ErrorCode = code
		return resp
	}
	dirty := map[partitionKey]bool{}
	for _, t := range req.Topics {
		rt := kmsg.NewShareAcknowledgeResponseTopic()
		rt.TopicID = t.TopicID
		info, known := c.opts.Topics.TopicByID(t.TopicID)
		for _, p := range t.Partitions {
			rp := kmsg.NewShareAcknowledgeResponseTopicPartition()
			rp.Partition = p.Partition
			rp.CurrentLeader.LeaderID = lim.NodeID
			switch {
			case !known:
				rp.ErrorCode = kerr.UnknownTopicID.Code
			case p.Partition < 0 || p.Partition >= info.Partitions:
				rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case lim.TopicDenied != nil && lim.TopicDenied(info.Name):
				rp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			default:
				batches := make([]ackBatch, len(p.AcknowledgementBatches))
				for i, b := range p.AcknowledgementBatches {
					batches[i] = ackBatch{b.FirstOffset, b.LastOffset, b.AcknowledgeTypes}
				}
				rp.ErrorCode = c.ackLocked(partitionKey{grp, t.TopicID, p.Partition}, member, batches, req.Version >= 2, now, dirty)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	if req.ShareSessionEpoch == -1 {
		c.closeSessionLocked(k, s)
	}
	end, err := c.persistLocked(dirty)
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	if err != nil {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				resp.Topics[i].Partitions[j].ErrorCode = kerr.CoordinatorNotAvailable.Code
			}
		}
	}
	return resp
}
