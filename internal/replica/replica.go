package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/quorum"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// Fetcher copies committed batches of the partition from another replica's
// log: whole batches from offset, at most about maxBytes (at least one
// batch), none when offset is that replica's end.
type Fetcher func(ctx context.Context, from int32, offset int64, maxBytes int) ([]byte, error)

// Config opens one replica.
type Config struct {
	// Partition is this replica's open partition (a log holding only
	// committed entries).
	Partition *partition.Partition
	// Node carries the group's traffic.
	Node *quorum.Node
	// ID names the group (GroupIDOf).
	ID quorum.GroupID
	// Replicas are the partition's replicas; the first is the preferred
	// leader, which campaigns at once when the group is new.
	Replicas []int32
	// FS and Dir hold the group's raft storage.
	FS  vfs.FS
	Dir string
	// Fetch copies batches from the leader when this replica is too far
	// behind for the leader's raft log.
	Fetch Fetcher
	// LagMax is replica.lag.time.max.ms; ElectionTimeout as the group's.
	LagMax          time.Duration
	ElectionTimeout time.Duration
	Logger          *slog.Logger
}

// Replica is this node's replica of a partition: the partition and its
// group. It is the group's state machine.
type Replica struct {
	p     *partition.Partition
	g     *quorum.Group
	fetch Fetcher
	log   *slog.Logger
	// hasRaftState: the group's storage held entries or a snapshot when
	// opened (else a non-empty log has lost its group).
	hasRaftState bool
}

// BatchResult is what applying a batch gave: where it landed or why it
// was refused (on every replica alike).
type BatchResult struct {
	partition.AppendResult
	Err error
}

// checkpoint is a group snapshot's data: the log up to Offset is durable
// here, and starts at Start.
type checkpoint struct {
	Offset int64 `json:"offset"`
	Start  int64 `json:"start"`
	// Producers is the producer state at Offset (partition.ProducerState):
	// the log may no longer hold the batches it was built from (a
	// DeleteRecords after the checkpoint, retention), and a replica
	// brought back to the checkpoint must decide as the others did.
	Producers []byte `json:"producers,omitempty"`
}

// restoreChunk is how much one fetch from the leader copies.
const restoreChunk = 1 << 20

// Open starts the replica: the group's storage is opened, the partition's
// log cut back to the last checkpoint (the entries after it are applied
// again from the group's log), and the group's loop started.
func Open(cfg Config) (*Replica, error) {
	if len(cfg.Replicas) == 0 || cfg.Partition == nil || cfg.Node == nil {
		return nil, errors.New("replica: Partition, Node and Replicas are required")
	}
	r := &Replica{p: cfg.Partition, fetch: cfg.Fetch, log: cfg.Logger}
	cfg.Partition.MarkReplicated()
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("topic", cfg.Partition.Topic, "partition", cfg.Partition.Index)
	var err error
	if r.hasRaftState, err = quorum.HasGroupState(cfg.FS, cfg.Dir); err != nil {
		return nil, err
	}
	ids := make([]uint64, len(cfg.Replicas))
	for i, id := range cfg.Replicas {
		ids[i] = uint64(id)
	}
	self := cfg.Node.Status().NodeID
	r.g, err = cfg.Node.StartGroup(quorum.GroupConfig{
		ID: cfg.ID, Replicas: ids, FS: cfg.FS, Dir: cfg.Dir, SM: r,
		ElectionTimeout: cfg.ElectionTimeout, LagMax: cfg.LagMax,
		Campaign: ids[0] == self, Logger: r.log,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Partition is the replica's partition.
func (r *Replica) Partition() *partition.Partition { return r.p }

// Status is the group's state on this replica.
func (r *Replica) Status() quorum.GroupStatus { return r.g.Status() }

// Changed is closed at the group's next change of leader, term or
// readiness.
func (r *Replica) Changed() <-chan struct{} { return r.g.Changed() }

// Leading reports whether this replica leads the partition.
func (r *Replica) Leading() bool { return r.g.Leading() }

// LeaderEpoch is the partition's leader epoch as this replica knows it:
// its group's term.
func (r *Replica) LeaderEpoch() int32 { return int32(r.g.Term()) }

// TransferLeadership asks the group to make replica to its leader.
func (r *Replica) TransferLeadership(to int32) { r.g.TransferLeadership(uint64(to)) }

// Close stops the group; the partition stays open (its owner closes it).
func (r *Replica) Close() error { return r.g.Close() }

// ProposeBatch proposes a validated batch, stamped with leaderEpoch (the
// group's term, as Kafka's leader epoch), and returns a function waiting
// for where it landed. Batches proposed in turn land in that order.
func (r *Replica) ProposeBatch(ctx context.Context, batch []byte, leaderEpoch int32, nowMs int64) (func(context.Context) (partition.AppendResult, error), error) {
	record.SetLeaderEpoch(batch, leaderEpoch)
	wait, err := r.g.ProposeAsync(ctx, EncodeBatch(nowMs, batch))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (partition.AppendResult, error) {
		v, err := wait(ctx)
		if err != nil {
			return partition.AppendResult{}, err
		}
		res, ok := v.(BatchResult)
		if !ok {
			return partition.AppendResult{}, fmt.Errorf("replica: batch applied as %T", v)
		}
		return res.AppendResult, res.Err
	}, nil
}

// WriteMarker replicates a transaction marker and returns once it is
// applied here.
func (r *Replica) WriteMarker(ctx context.Context, m Marker) error {
	v, err := r.g.Propose(ctx, EncodeMarker(time.Now().UnixMilli(), m))
	if err != nil {
		return err
	}
	if e, ok := v.(error); ok {
		return e
	}
	return nil
}

// DeleteRecords replicates a new log start offset (-1: the HW) and
// returns the log start offset after it.
func (r *Replica) DeleteRecords(ctx context.Context, offset int64) (int64, error) {
	v, err := r.g.Propose(ctx, EncodeDeleteRecords(time.Now().UnixMilli(), offset))
	if err != nil {
		return 0, err
	}
	switch v := v.(type) {
	case error:
		return 0, v
	case int64:
		return v, nil
	}
	return 0, fmt.Errorf("replica: delete-records applied as %T", v)
}

// Expire replicates a producer expiry as of the leader's clock.
func (r *Replica) Expire(ctx context.Context) error {
	v, err := r.g.Propose(ctx, EncodeExpire(time.Now().UnixMilli()))
	if err != nil {
		return err
	}
	if e, ok := v.(error); ok {
		return e
	}
	return nil
}

// Apply implements quorum.GroupStateMachine.
func (r *Replica) Apply(index, term uint64, data []byte) any {
	e, err := Decode(data)
	if err != nil {
		r.log.Error("skipping an undecodable entry", "index", index, "err", err)
		return err
	}
	switch e.Kind {
	case KindBatch:
		h, err := record.ParseHeader(e.Batch)
		if err != nil {
			return BatchResult{Err: err}
		}
		// A copy: the log stamps the base offset into what it appends,
		// and the entry's bytes are raft's, which its transport may be
		// sending to a slower follower at this moment. The entry's term
		// is the leader epoch (the leader stamped its term when
		// proposing; a proposal made just as the term changed differs).
		batch := slices.Clone(e.Batch)
		record.SetLeaderEpoch(batch, int32(term))
		h.LeaderEpoch = int32(term)
		res, err := r.p.ApplyBatch(batch, h, e.NowMs)
		return BatchResult{AppendResult: res, Err: err}
	case KindMarker:
		m := e.Marker
		return r.p.ApplyMarker(m.ProducerID, m.ProducerEpoch, m.Commit, m.CoordinatorEpoch, m.FirstOffset, e.NowMs, int32(term))
	case KindDeleteRecords:
		start, err := r.p.DeleteRecordsBefore(e.Offset)
		if err != nil {
			return err
		}
		return start
	case KindExpire:
		// Producers idle since before the entry's clock minus the
		// expiration go, on every replica at this same point of the log.
		if _, err := r.p.ExpireProducers(e.NowMs); err != nil {
			return err
		}
	}
	return nil
}

// Checkpoint implements quorum.GroupStateMachine: the log is fsynced to
// its end, which every entry applied so far reached.
func (r *Replica) Checkpoint() ([]byte, error) {
	end := r.p.LogEndOffset()
	if err := r.p.Log().Sync(end); err != nil {
		return nil, err
	}
	return json.Marshal(checkpoint{Offset: end, Start: r.p.LogStartOffset(), Producers: r.p.ProducerState()})
}

// Restore implements quorum.GroupStateMachine.
func (r *Replica) Restore(from uint64, data []byte) error {
	if from == 0 {
		return r.restoreOwn(data)
	}
	var cp checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return fmt.Errorf("leader %d's snapshot: %w", from, err)
	}
	end := r.p.LogEndOffset()
	if end > cp.Offset {
		return fmt.Errorf("the log ends at %d, past the leader's snapshot at %d", end, cp.Offset)
	}
	if end < cp.Start {
		r.log.Info("log behind the leader's log start: starting over there", "end", end, "leader_start", cp.Start)
		if err := r.p.ResetTo(cp.Start); err != nil {
			return err
		}
	}
	for tries := 0; r.p.LogEndOffset() < cp.Offset; {
		off := r.p.LogEndOffset()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := r.fetch(ctx, int32(from), off, restoreChunk)
		cancel()
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("leader %d returned nothing at offset %d", from, off)
		}
		if err != nil {
			if tries++; tries >= 5 {
				return fmt.Errorf("copying from leader %d at offset %d: %w", from, off, err)
			}
			time.Sleep(time.Duration(tries) * 200 * time.Millisecond)
			continue
		}
		tries = 0
		if err := r.p.AppendFetched(clip(b, cp.Offset)); err != nil {
			return err
		}
	}
	if cp.Producers != nil {
		if err := r.p.RestoreProducerState(cp.Producers); err != nil {
			return err
		}
	}
	r.log.Info("caught up from the leader's snapshot", "leader", from, "offset", cp.Offset)
	return r.p.Log().Sync(cp.Offset)
}

// restoreOwn brings the log back to this replica's last checkpoint: what
// was applied after it is applied again from the group's log.
func (r *Replica) restoreOwn(data []byte) error {
	// Without a checkpoint the group applies its log from the first
	// entry, which a new partition's empty log at offset 0 preceded (a
	// replicated partition is always created empty): the log starts over
	// there, whatever DeleteRecords did to its start since.
	cp := checkpoint{Offset: 0}
	if data != nil {
		if err := json.Unmarshal(data, &cp); err != nil {
			return fmt.Errorf("own snapshot: %w", err)
		}
	} else if !r.hasRaftState && r.p.LogEndOffset() > r.p.LogStartOffset() {
		return fmt.Errorf("the log holds offsets %d to %d but the partition's raft group has no state: its storage is missing; refusing to replay over the log",
			r.p.LogStartOffset(), r.p.LogEndOffset())
	}
	end := r.p.LogEndOffset()
	switch {
	case end < cp.Offset:
		return fmt.Errorf("the log ends at %d, below its checkpoint %d: fsynced data is missing", end, cp.Offset)
	case r.p.LogStartOffset() > cp.Offset:
		// The log start moved past the checkpoint after it was taken (a
		// DeleteRecords entry applied, a coordinator's compaction,
		// retention), so no prefix of the log ends at the checkpoint: the
		// log starts over there and the group's log applies everything
		// after it again, the DeleteRecords included.
		r.log.Info("log start past its checkpoint: starting the log over at the checkpoint; the group's log applies the rest again",
			"start", r.p.LogStartOffset(), "checkpoint", cp.Offset)
		if err := r.p.ResetTo(cp.Offset); err != nil {
			return err
		}
	case end > cp.Offset:
		r.log.Info("cutting the log back to its checkpoint; the group's log applies the rest again", "from", end, "to", cp.Offset)
		if err := r.p.TruncateTo(cp.Offset); err != nil {
			return err
		}
	}
	if cp.Producers != nil {
		if err := r.p.RestoreProducerState(cp.Producers); err != nil {
			return err
		}
	}
	r.p.AdvanceHW()
	return nil
}

// clip drops the batches of b at or above offset upto.
func clip(b []byte, upto int64) []byte {
	n := 0
	record.Split(b, func(h record.Header, batch []byte) error {
		if h.BaseOffset >= upto {
			return errStop
		}
		n += len(batch)
		return nil
	})
	return b[:n]
}

var errStop = errors.New("stop")
