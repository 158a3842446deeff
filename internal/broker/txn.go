package broker

// Transaction coordinator wiring: the __transaction_state topic, the
// internal/txn driver over it, the marker writer that reaches this broker's
// partitions, the ApiVersions feature that turns on KIP-890 v2 in clients,
// and the coordinator's metrics. The APIs themselves are in
// api22/24/25/26/27/28/61/65/66_*.go; the produce-side check is in
// txnhooks.go.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/txn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnStateTopic is the coordinator's log, named as in Kafka so tools that
// know it (and hide it) recognise it.
const txnStateTopic = "__transaction_state"

// txnStateConfigs keep the coordinator's log for ever: the coordinator
// compacts it itself (snapshot, then DeleteRecordsBefore), and time-based
// retention would delete the only record of a long-idle transactional id.
var txnStateConfigs = map[string]string{
	"retention.ms":    "-1",
	"retention.bytes": "-1",
	"segment.bytes":   "8388608",
}

// txnGroupCoordinator is what TxnOffsetCommit needs from the
// consumer-group coordinator: KIP-447 membership checks and staging. (The
// transaction driver applies or discards staged offsets when a
// transaction ends by calling the group coordinator directly.)
type txnGroupCoordinator interface {
	// ValidateTxnCommit checks that the member may commit for the group
	// (generation and member id, or static instance id), as for a plain
	// offset commit; a producer zombie from an old generation is fenced.
	ValidateTxnCommit(group, memberID string, generation int32, groupInstanceID *string) error
	// StageTxnOffsets durably records offsets committed inside the
	// producer's open transaction, visible only once CompleteTxn commits.
	StageTxnOffsets(producerID int64, producerEpoch int16, group string, topics []kmsg.TxnOffsetCommitRequestTopic) error
}

// txnCoordinator is the broker's transaction coordinator.
type txnCoordinator struct {
	d       *txn.Driver
	groups  txnGroupCoordinator
	metrics *txnMetrics

	stop     chan struct{}
	sweeping sync.WaitGroup
	sweepMu  sync.Mutex // serializes sweeps; guards suspects
	// suspects counts consecutive sweeps that found each open partition
	// transaction unknown to the coordinator.
	suspects map[hangingKey]int
}

// txnSweepInterval is how often open partition transactions are checked
// against the coordinator; one found unknown on two consecutive sweeps is
// aborted, so a hanging transaction holds its LSO back for at most about
// two intervals.
const txnSweepInterval = 10 * time.Second

// startTxnCoordinator replays __transaction_state from log and starts the
// coordinator, which finishes any transaction a crash or a failover
// interrupted between its decision and its markers.
func (b *Broker) startTxnCoordinator(log partition.StateLog, groups *group.Coordinator) (*txnCoordinator, error) {
	tc := &txnCoordinator{metrics: b.txnMetrics, groups: groupsForTxn{groups}}
	d, err := txn.NewDriver(txn.DriverConfig{
		Machine: txn.Config{
			MaxTimeoutMs:   int32(b.brokerInt("transaction.max.timeout.ms")),
			IDExpirationMs: b.brokerInt("transactional.id.expiration.ms"),
			PIDBlockSize:   1000,
		},
		Log:       log,
		Markers:   brokerMarkers{b},
		Offsets:   groups,
		Observer:  tc.metrics,
		Logger:    b.log.With("component", "txn"),
		Failpoint: txnFailpoint(b.log),
	})
	if err != nil {
		return nil, fmt.Errorf("transaction coordinator: %w", err)
	}
	tc.d = d
	tc.stop = make(chan struct{})
	tc.suspects = map[hangingKey]int{}
	d.Start()
	tc.sweeping.Add(1)
	go b.sweepLoop(tc)
	return tc, nil
}

// stopTxnCoordinator stops timers and marker writers; transactions still
// ending finish when the coordinator next starts, here or elsewhere.
func (b *Broker) stopTxnCoordinator(tc *txnCoordinator) {
	// A stopped driver answers COORDINATOR_NOT_AVAILABLE to whatever
	// still reaches it.
	close(tc.stop)
	tc.sweeping.Wait()
	tc.d.Stop()
}

func (b *Broker) openTxnStateTopic() (*partition.Partition, error) {
	return b.internalPartition(txnStateTopic, txnStateConfigs)
}

// txnFailpointEnv names a coordinator stage at which the broker kills
// itself with SIGKILL: the crash tests (e2e) use it to stop the process
// exactly between a transaction's durable decision and its markers, which
// no outside timing can hit reliably. Stages: "prepared", "marker-written".
const txnFailpointEnv = "EXACTLY_TXN_FAILPOINT"

func txnFailpoint(logger *slog.Logger) func(string) {
	want := os.Getenv(txnFailpointEnv)
	if want == "" {
		return nil
	}
	logger.Warn("transaction coordinator failpoint armed: the broker will SIGKILL itself", "stage", want)
	return func(stage string) {
		if stage == want {
			logger.Warn("transaction coordinator failpoint reached: SIGKILL", "stage", stage)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

// hangingKey identifies one open transaction on one partition.
type hangingKey struct {
	topic       string
	partition   int32
	producerID  int64
	firstOffset int64
}

func (b *Broker) sweepLoop(tc *txnCoordinator) {
	defer tc.sweeping.Done()
	t := time.NewTicker(txnSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-tc.stop:
			return
		case <-t.C:
			b.sweepHanging(tc)
		}
	}
}

// sweepHanging aborts hanging transactions: open on a partition (holding
// its LSO, so read_committed readers, back) while the coordinator runs no
// transaction for that producer with that partition. The produce path
// makes that impossible in normal operation — a partition's membership is
// durable before a transactional batch is appended, and a transaction
// leaves Prepare* only after its markers — so what is left is a write that
// raced past the end of its own transaction from a client that adds
// partitions itself (pre-KIP-890 v2), data from before the coordinator
// existed, or a bug. Kafka leaves those to an operator
// (kafka-transactions.sh abort); a stuck LSO is an outage for every
// read_committed reader, so here the coordinator aborts them itself once
// two consecutive sweeps agree. Internal topics are skipped: their
// transactional records belong to their own coordinators.
func (b *Broker) sweepHanging(tc *txnCoordinator) {
	tc.sweepMu.Lock()
	defer tc.sweepMu.Unlock()
	running, wait := tc.d.List(txn.Filter{States: []txn.State{txn.Ongoing, txn.PrepareCommit, txn.PrepareAbort}})
	if wait() != nil {
		return
	}
	byPID := map[int64]*txn.Meta{}
	for i := range running {
		byPID[running[i].ProducerID] = &running[i]
	}
	next := map[hangingKey]int{}
	for _, t := range b.catalog.Topics() {
		if t.Internal {
			continue
		}
		for _, p := range b.partitions(t.Name) {
			for _, pr := range p.Producers() {
				if pr.TxnFirstOffset < 0 {
					continue
				}
				if m := byPID[pr.ID]; m != nil && slices.Contains(m.Partitions, txn.TopicPartition{Topic: t.Name, Partition: p.Index}) {
					continue
				}
				k := hangingKey{t.Name, p.Index, pr.ID, pr.TxnFirstOffset}
				next[k] = tc.suspects[k] + 1
				if next[k] < 2 {
					continue
				}
				err := b.writeMarker(p, pr.ID, pr.Epoch, false, pr.CoordinatorEpoch, -1)
				b.log.Warn("aborted a hanging transaction the coordinator does not run", "topic", t.Name, "partition", p.Index,
					"producer_id", pr.ID, "epoch", pr.Epoch, "first_offset", pr.TxnFirstOffset, "err", err)
				if err == nil {
					delete(next, k)
					tc.metrics.hangingAborted.Inc()
				}
			}
		}
	}
	tc.suspects = next
}

// brokerMarkers writes markers to this broker's own partitions.
type brokerMarkers struct{ b *Broker }

func (m brokerMarkers) WriteTxnMarker(tp txn.TopicPartition, pid int64, epoch int16, commit bool, coordinatorEpoch int32) error {
	p := m.b.partition(tp.Topic, tp.Partition)
	if p == nil && m.b.clustered() {
		return m.b.writeRemoteMarker(tp, pid, epoch, commit, coordinatorEpoch)
	}
	return m.b.writeLocalMarker(p, tp, pid, epoch, commit, coordinatorEpoch)
}

// writeLocalMarker writes a coordinator's marker to a partition this node
// holds (p nil: none, the partition is gone).
func (b *Broker) writeLocalMarker(p *partition.Partition, tp txn.TopicPartition, pid int64, epoch int16, commit bool, coordinatorEpoch int32) error {
	if p == nil {
		return txn.ErrPartitionGone
	}
	err := b.writeMarker(p, pid, epoch, commit, coordinatorEpoch, -1)
	if errors.Is(err, producerstate.ErrInvalidEpoch) {
		// The partition already saw a newer epoch of this producer, so this
		// transaction ended there long ago (a marker re-sent after a
		// restart): retrying could never succeed and is not needed.
		b.log.Warn("transaction marker older than the partition's producer epoch; skipped",
			"topic", tp.Topic, "partition", tp.Partition, "producer_id", pid, "epoch", epoch, "err", err)
		return nil
	}
	return err
}

// txnFeatures advertises transaction.version 2 (KIP-890 part 2) in
// ApiVersions v3+ once every piece it implies is served: Produce v12
// (partitions added implicitly), EndTxn v5 (epoch bumped and returned at
// every end) and TxnOffsetCommit v5 (groups added implicitly). Clients use
// those versions only when the finalized level is 2, so advertising it
// early would make them skip AddPartitionsToTxn while producing with v11.
func (b *Broker) txnFeatures(resp *kmsg.ApiVersionsResponse, version int16) {
	if version < 3 {
		return
	}
	level := int16(0)
	if e, ok := apis[0]; ok && e.hi >= 12 {
		if e, ok := apis[26]; ok && e.hi >= 5 {
			if e, ok := apis[28]; ok && e.hi >= 5 {
				level = 2
			}
		}
	}
	sf := kmsg.NewApiVersionsResponseSupportedFeature()
	sf.Name, sf.MinVersion, sf.MaxVersion = "transaction.version", 0, level
	resp.SupportedFeatures = append(resp.SupportedFeatures, sf)
	ff := kmsg.NewApiVersionsResponseFinalizedFeature()
	ff.Name, ff.MinVersionLevel, ff.MaxVersionLevel = "transaction.version", level, level
	resp.FinalizedFeatures = append(resp.FinalizedFeatures, ff)
	if resp.FinalizedFeaturesEpoch < 1 {
		// -1 means "no finalized features"; a single node never changes
		// its features at run time, so any fixed epoch will do.
		resp.FinalizedFeaturesEpoch = 1
	}
}

// txnError turns a coordinator result into an error code for a request of
// the given version: PRODUCER_FENCED (KIP-588) is INVALID_PRODUCER_EPOCH to
// clients that predate it (fencedSince is the first version that knows it).
func txnError(e *kerr.Error, version, fencedSince int16) int16 {
	if e == nil {
		return 0
	}
	if e == kerr.ProducerFenced && version < fencedSince {
		return kerr.InvalidProducerEpoch.Code
	}
	return e.Code
}

// anyErrorCode maps an error that may be a bare *kerr.Error (as other
// coordinators return) or a domain error.
func anyErrorCode(err error) int16 {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	return errorCode(err)
}

// partitionKnown reports whether topic has partition p.
func (b *Broker) partitionKnown(topic string, p int32) bool {
	t, ok := b.catalog.Topic(topic)
	return ok && p >= 0 && p < t.Partitions
}

// txnMetrics are the coordinator's Prometheus series (Kafka's
// TransactionCoordinator has no JMX equivalent for these; named in the
// same style).
type txnMetrics struct {
	completed      *prometheus.CounterVec
	markers        *prometheus.HistogramVec
	endTime        *prometheus.HistogramVec
	hangingAborted prometheus.Counter
}

func newTxnMetrics(reg prometheus.Registerer) *txnMetrics {
	m := &txnMetrics{
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_coordinator_transaction_completed_total",
			Help: "Transactions ended, by result (commit, abort) and by who ended them (client, timeout).",
		}, []string{"result", "by"}),
		markers: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kafka_coordinator_transaction_markers_seconds",
			Help:    "Time from a transaction's durable decision to its last marker, by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"result"}),
		endTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kafka_coordinator_end_txn_seconds",
			Help:    "EndTxn latency from request to answer (markers written), by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"result"}),
		hangingAborted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_coordinator_hanging_transactions_aborted_total",
			Help: "Transactions open on a partition but unknown to the coordinator, aborted by its sweep.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.completed, m.markers, m.endTime, m.hangingAborted)
	}
	return m
}

func resultLabel(commit bool) string {
	if commit {
		return "commit"
	}
	return "abort"
}

// TxnCompleted implements txn.Observer.
func (m *txnMetrics) TxnCompleted(commit, timedOut bool, markers time.Duration) {
	by := "client"
	if timedOut {
		by = "timeout"
	}
	m.completed.WithLabelValues(resultLabel(commit), by).Inc()
	m.markers.WithLabelValues(resultLabel(commit)).Observe(markers.Seconds())
}
