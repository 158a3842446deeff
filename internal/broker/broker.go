// Package broker implements the Kafka APIs on top of the catalog and the
// partitions. One file per API key (apiNN_name.go), each opening with the
// versions it serves, what it does and its known gaps; the ApiVersions
// answer is built from those registrations, so the broker never advertises
// a version it does not serve.
package broker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/quota"
	"github.com/exactly/exactly/internal/replica"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config is what a Broker needs to start.
type Config struct {
	// FS is the filesystem; vfs.OS() in production, in-memory in tests.
	FS vfs.FS
	// DataDir is log.dirs: the catalog and one directory per partition.
	DataDir string
	// NodeID is node.id (broker.id).
	NodeID int32
	// AdvertisedHost and AdvertisedPort are returned in metadata.
	AdvertisedHost string
	AdvertisedPort int32
	// Advertised maps a listener name to the address its clients are
	// told (advertised.listeners): Metadata, FindCoordinator and
	// DescribeCluster answer the address of the listener the request
	// came in on, as Kafka does. A listener not in it gets
	// AdvertisedHost:AdvertisedPort.
	Advertised map[string]Endpoint
	// Static holds broker configs from server.properties and --set.
	Static map[string]string
	// Logger receives one line per notable event.
	Logger *slog.Logger
	// Registry receives the broker's metrics; nil for none.
	Registry prometheus.Registerer
	// Cluster makes the broker one node of a cluster; nil is a single
	// node (cluster.go).
	Cluster *ClusterConfig
}

// Endpoint is an advertised host and port.
type Endpoint struct {
	Host string
	Port int32
}

// advertised is the address to tell the client of r: that of the
// listener r arrived on.
func (b *Broker) advertised(r *server.Request) (string, int32) {
	if r != nil && r.Conn != nil {
		if e, ok := b.cfg.Advertised[r.Conn.Listener()]; ok {
			return e.Host, e.Port
		}
	}
	return b.cfg.AdvertisedHost, b.cfg.AdvertisedPort
}

// Broker serves the Kafka APIs for one node.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	dataDir *cluster.DataDir // locked until Close
	catalog *cluster.Catalog
	metrics *metrics
	cleaner *logCleaner // compaction (cleaner.go)

	// adminMu serializes topic creation, deletion and partition changes so
	// the catalog and the open partitions never disagree.
	adminMu sync.Mutex

	partsMu sync.RWMutex
	parts   map[string][]*partition.Partition // topic name → partitions by index

	// repMu guards replicas: the raft replica of each open partition
	// that has more than one replica (replication.go). Taken after
	// partsMu, never before.
	repMu    sync.RWMutex
	replicas map[*partition.Partition]*replica.Replica

	// storedRPs are the recovery points read at start, handed to the
	// partitions as they open.
	storedRPs log.RecoveryPoints
	// rpMu serializes rewrites of the recovery point file.
	rpMu sync.Mutex

	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	// coord holds the group, transaction and share coordinators this
	// node runs or ran last (coordinators.go); txnMetrics outlive them.
	coord      atomic.Pointer[coordinators]
	txnMetrics *txnMetrics
	// coordMu serializes hostCoordinators with Close's unload, so no
	// load finishes after it; closing is set under it.
	coordMu sync.Mutex
	closing bool

	// quotas holds the client quotas and their rate trackers (quotas.go);
	// changes to it and the catalog's copy are made under adminMu.
	quotas *quota.Manager

	// autoCreate bounds topic auto-creation by Metadata (autocreate.go).
	autoCreate autoCreateBudget

	// authAudit rate-limits the log lines of failed authentications
	// (sasl.go).
	authAudit server.LogLimiter

	// authz is the authorization setup (authz.go).
	authz *authzConfig

	// node is this broker's part in a cluster (cluster.go); nil on a
	// single node.
	node *nodeState
}

// New opens the catalog and every partition (recovering logs as needed).
func New(cfg Config) (*Broker, error) {
	if cfg.FS == nil {
		cfg.FS = vfs.OS()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	for k, v := range cfg.Static {
		if err := cluster.ValidateBrokerConfig(k, v); err != nil {
			return nil, err
		}
	}
	openDir := cluster.OpenDataDir
	if cfg.Cluster != nil && cfg.Cluster.Adopt {
		openDir = cluster.OpenDataDirAdopting
	}
	dd, err := openDir(cfg.FS, cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	b, err := open(cfg, dd)
	if err != nil {
		dd.Close()
		return nil, err
	}
	return b, nil
}

// open starts the broker on a locked data directory.
func open(cfg Config, dd *cluster.DataDir) (*Broker, error) {
	var cat *cluster.Catalog
	var node *nodeState
	var err error
	if cfg.Cluster != nil {
		if cat, node, err = startNode(cfg, dd); err != nil {
			return nil, err
		}
	} else {
		cat, err = cluster.OpenCatalog(cfg.FS, cfg.DataDir, cfg.Static)
		if err != nil {
			return nil, fmt.Errorf("opening catalog in %s: %w", cfg.DataDir, err)
		}
		if err := dd.Claim(cat.ClusterID(), cfg.NodeID); err != nil {
			return nil, err
		}
	}
	if dd.Adopted {
		cfg.Logger.Info("adopted a data directory written before meta.properties existed", "dir", cfg.DataDir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, log: cfg.Logger, dataDir: dd, catalog: cat, parts: map[string][]*partition.Partition{}, replicas: map[*partition.Partition]*replica.Replica{}, ctx: ctx, cancel: cancel, node: node}
	if node != nil {
		cat.OnHeartbeat(b.heardHeartbeat)
		err := b.registerAtStart()
		if err == nil && cfg.Cluster.Adopt {
			err = b.adopt()
		}
		if err != nil {
			cancel()
			node.quorum.Close()
			return nil, err
		}
	}
	b, err = b.start()
	if err != nil && node != nil {
		node.quorum.Close()
	}
	return b, err
}

// start recovers the partitions and starts the coordinators and the
// background work of a broker whose catalog is open.
func (b *Broker) start() (*Broker, error) {
	cfg, cat, cancel := b.cfg, b.catalog, b.cancel
	var err error
	b.cleaner = newLogCleaner(b)
	b.metrics = newMetrics(b, cfg.Registry)
	b.startAuthz()
	if err := b.startQuotas(); err != nil {
		cancel()
		return nil, err
	}
	if err := b.finishDeletions(""); err != nil {
		cancel()
		return nil, err
	}
	b.reportStrangers()
	if b.storedRPs, err = log.ReadRecoveryPoints(cfg.FS, b.recoveryPointsPath()); err != nil {
		cancel()
		return nil, err
	}
	for _, t := range cat.Topics() {
		ps := make([]*partition.Partition, t.Partitions)
		for i := range ps {
			if !b.holds(t, int32(i)) {
				continue
			}
			p, err := b.openPartition(t, int32(i))
			if err == nil && b.clustered() && replicated(t, int32(i)) {
				if err = b.openReplica(t, int32(i), p); err != nil {
					p.Close()
					err = fmt.Errorf("opening the replica of %s-%d: %w", t.Name, i, err)
				}
			}
			if err != nil {
				b.closePartitions()
				cancel()
				return nil, err
			}
			ps[i] = p
		}
		b.parts[t.Name] = ps
	}
	b.txnMetrics = newTxnMetrics(cfg.Registry)
	if err := b.registerCoordinatorMetrics(); err != nil {
		b.closePartitions()
		cancel()
		return nil, err
	}
	if !b.clustered() {
		// On a cluster hostCoordinatorsPass loads them where their
		// partitions' leader is.
		if err := b.startLocalCoordinators(); err != nil {
			b.closePartitions()
			cancel()
			return nil, err
		}
	}
	// Everything recovered was fsynced by Open: store it at once, so a
	// crash soon after start leaves no stale recovery point behind.
	if err := b.writeRecoveryPoints(b.allPartitions()); err != nil {
		b.unloadCoordinators()
		b.closePartitions()
		cancel()
		return nil, err
	}
	b.cleaner.start()
	b.bg.Add(3)
	go b.every("log.retention.check.interval.ms", b.ApplyRetention)
	go b.every("producer.id.expiration.check.interval.ms", b.ExpireProducers)
	go b.every("log.flush.offset.checkpoint.interval.ms", b.checkpointRecoveryPoints)
	if b.clustered() {
		if cfg.Registry != nil {
			if err := cfg.Registry.Register(&clusterCollector{b: b}); err != nil {
				b.log.Warn("metadata quorum metrics not registered", "err", err)
			}
		}
		b.bg.Add(5)
		go b.reconcileLoop()
		go b.heartbeatLoop()
		go b.controllerLoop()
		go b.reportLeadershipLoop()
		go b.everyInterval(coordHostInterval, b.hostCoordinatorsPass)
	}
	return b, nil
}

// Catalog exposes the topic catalog (for the embedding API and tests).
func (b *Broker) Catalog() *cluster.Catalog { return b.catalog }

// ClusterID is the cluster's stable ID.
func (b *Broker) ClusterID() string { return b.catalog.ClusterID() }

var partitionDirRE = regexp.MustCompile(`^(.+)-([0-9]+)$`)

func (b *Broker) partitionDir(topic string, index int32) string {
	return filepath.Join(b.cfg.DataDir, topic+"-"+strconv.Itoa(int(index)))
}

// finishDeletions removes the partition directories of deleted topics
// (every one, or those named only) that a crash or an I/O error left
// behind, then forgets the topics. A directory is removed only if its
// marker names the deleted topic (or it is empty): the broker deletes
// only what it created.
func (b *Broker) finishDeletions(only string) error {
	// A topic deleted while a reconcile ran is gone from the catalog with
	// its partitions still open here: the next reconcile closes them,
	// and only then may their directories go.
	open := map[partition.TopicID]bool{}
	for _, p := range b.allPartitions() {
		open[p.TopicID()] = true
	}
	for _, t := range b.catalog.Deleting() {
		if (only != "" && t.Name != only) || open[partition.TopicID(t.ID)] {
			continue
		}
		if len(t.Pending) > 0 && !slices.Contains(t.Pending, b.cfg.NodeID) {
			continue // done here; other nodes of the cluster are not
		}
		for i := int32(0); i < t.Partitions; i++ {
			dir := b.partitionDir(t.Name, i)
			if _, err := b.cfg.FS.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			gone, err := partition.RemoveDir(b.cfg.FS, dir, partition.TopicID(t.ID))
			if err != nil {
				return fmt.Errorf("removing %s of deleted topic %s: %w", dir, t.Name, err)
			}
			if !gone {
				b.log.Info("leaving a directory alone: it was not created for the deleted topic of that name", "dir", dir, "topic_id", t.ID.String())
			} else {
				b.log.Info("removed partition directory of a deleted topic", "dir", dir)
			}
		}
		if err := b.catalog.DeletionDone(t.ID, b.cfg.NodeID); err != nil {
			return err
		}
	}
	return nil
}

// reportStrangers logs, once per start, every entry of the data directory
// that is neither one of its own files nor a live partition: the broker
// never modifies them.
func (b *Broker) reportStrangers() {
	names, err := b.cfg.FS.ReadDir(b.cfg.DataDir)
	if err != nil {
		return
	}
	for _, name := range names {
		if cluster.IsDataDirFile(name) {
			continue
		}
		if m := partitionDirRE.FindStringSubmatch(name); m != nil {
			idx, _ := strconv.Atoi(m[2])
			if t, ok := b.catalog.Topic(m[1]); ok && int32(idx) < t.Partitions {
				continue
			}
		}
		b.log.Info("ignoring an entry of the data directory that exactly did not create", "entry", filepath.Join(b.cfg.DataDir, name))
	}
}

// checkNewDirs makes sure the directories of partitions [from, to) of topic
// name, about to be created, do not exist: leftovers of a deleted topic of
// that name are removed first; anything else is refused, never reused or
// deleted.
func (b *Broker) checkNewDirs(name string, from, to int32) error {
	if err := b.finishDeletions(name); err != nil {
		return err
	}
	for i := from; i < to; i++ {
		dir := b.partitionDir(name, i)
		_, err := b.cfg.FS.Stat(dir)
		if err == nil {
			return fmt.Errorf("%w: %s already exists and exactly did not create it for a deleted topic; move it out of the data directory to create %s",
				partition.ErrForeignDir, dir, name)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (b *Broker) openPartition(t *cluster.Topic, index int32) (*partition.Partition, error) {
	rp := b.storedRPs[log.PartitionKey{Topic: t.Name, Partition: index, TopicID: t.ID}]
	p, err := partition.Open(b.cfg.FS, b.partitionDir(t.Name, index), t.Name, index, b.logConfig(t), b.log,
		partition.Options{TopicID: partition.TopicID(t.ID), RecoveryPoint: rp, Producers: b.producerLimits()})
	if err != nil {
		return nil, err
	}
	if ce := p.Log().Corruption(); ce != nil && t.Internal {
		// Group offsets and transactions cannot run with a hole in their
		// log, and replaying around it would silently forget state.
		p.Close()
		return nil, fmt.Errorf("internal topic %s-%d is corrupt, refusing to start: %w; %s", t.Name, index, ce, log.RepairHint)
	}
	return p, nil
}

func (b *Broker) recoveryPointsPath() string {
	return filepath.Join(b.cfg.DataDir, cluster.RecoveryPointsName)
}

// allPartitions lists every open partition.
func (b *Broker) allPartitions() []*partition.Partition {
	b.partsMu.RLock()
	defer b.partsMu.RUnlock()
	var all []*partition.Partition
	for _, ps := range b.parts {
		for _, p := range ps {
			if p != nil { // held by another node of the cluster
				all = append(all, p)
			}
		}
	}
	return all
}

// writeRecoveryPoints stores the recovery point of each partition given:
// what its log reports as fsynced, so it is true when read.
func (b *Broker) writeRecoveryPoints(ps []*partition.Partition) error {
	b.rpMu.Lock()
	defer b.rpMu.Unlock()
	rps := make(log.RecoveryPoints, len(ps))
	for _, p := range ps {
		// The partition's own topic id, not the catalog's: a topic deleted
		// and created again meanwhile must not inherit this offset.
		rps[log.PartitionKey{Topic: p.Topic, Partition: p.Index, TopicID: p.TopicID()}] = p.RecoveryPoint()
	}
	if err := log.WriteRecoveryPoints(b.cfg.FS, b.recoveryPointsPath(), rps); err != nil {
		return fmt.Errorf("writing recovery points: %w", err)
	}
	return nil
}

// checkpointRecoveryPoints rewrites the recovery point file (every
// log.flush.offset.checkpoint.interval.ms). A failed write keeps the old
// file, which lags but stays true.
func (b *Broker) checkpointRecoveryPoints(time.Time) {
	if err := b.writeRecoveryPoints(b.allPartitions()); err != nil {
		b.log.Error("recovery point checkpoint failed", "err", err)
	}
}

// evictIdleMs is how long a producer must have been idle before a new one
// may take its place in a full partition: well past any client's retries
// (delivery.timeout.ms is 2 minutes by default), so an attacker's forged
// ids cannot make a live producer lose its duplicate detection.
const evictIdleMs = 5 * 60 * 1000

// producerLimits are the bounds on every partition's producer state.
func (b *Broker) producerLimits() partition.ProducerLimits {
	exp := b.brokerInt("producer.id.expiration.ms")
	return partition.ProducerLimits{
		Limits: producerstate.Limits{
			MaxProducers: int(b.brokerInt("producer.id.max.per.partition")),
			EvictIdleMs:  min(exp, evictIdleMs),
			NowMs:        func() int64 { return time.Now().UnixMilli() },
		},
		ExpirationMs: exp,
		OnForgotten: func(n int) {
			if b.metrics != nil {
				b.metrics.producersExpired.Add(float64(n))
			}
		},
	}
}

// logConfig resolves a topic's effective storage settings.
func (b *Broker) logConfig(t *cluster.Topic) log.Config {
	get := func(key string) int64 {
		v, _ := b.catalog.TopicConfig(t, key)
		return cluster.Int64(v, 0)
	}
	cfg := log.DefaultConfig()
	cfg.SegmentBytes = get("segment.bytes")
	cfg.SegmentMs = get("segment.ms")
	cfg.IndexIntervalBytes = int(get("index.interval.bytes"))
	cfg.RetentionMs = get("retention.ms")
	cfg.RetentionBytes = get("retention.bytes")
	cfg.CacheTailBytes = b.brokerInt("log.cache.tail.bytes")
	if policy, _ := b.catalog.TopicConfig(t, "cleanup.policy"); !cluster.PolicyDeletes(policy) {
		// compact alone: nothing is deleted by age or size.
		cfg.RetentionMs, cfg.RetentionBytes = -1, -1
	}
	return cfg
}

// topicInt resolves an integer topic config.
func (b *Broker) topicInt(t *cluster.Topic, key string) int64 {
	v, _ := b.catalog.TopicConfig(t, key)
	return cluster.Int64(v, 0)
}

// brokerBool resolves a boolean broker config.
func (b *Broker) brokerBool(key string) bool {
	v, _ := b.catalog.BrokerConfig(key)
	return v == "true"
}

// brokerInt resolves an integer broker config.
func (b *Broker) brokerInt(key string) int64 {
	v, _ := b.catalog.BrokerConfig(key)
	return cluster.Int64(v, 0)
}

// partition returns an open partition this node serves clients from, or
// nil if the topic or index is unknown, or the partition is held
// elsewhere, or this node is a follower of its replicated partition.
func (b *Broker) partition(topic string, index int32) *partition.Partition {
	p := b.localPartition(topic, index)
	if r := b.replicaOf(p); r != nil && !r.Leading() {
		return nil
	}
	return p
}

// localPartition returns an open partition held here, leader or follower.
func (b *Broker) localPartition(topic string, index int32) *partition.Partition {
	b.partsMu.RLock()
	ps := b.parts[topic]
	b.partsMu.RUnlock()
	if index < 0 || int(index) >= len(ps) {
		return nil
	}
	return ps[index]
}

// partitions returns a topic's open partitions (in a cluster, those this
// node holds).
func (b *Broker) partitions(topic string) []*partition.Partition {
	b.partsMu.RLock()
	defer b.partsMu.RUnlock()
	ps := b.parts[topic]
	if !slices.Contains(ps, nil) {
		return ps
	}
	return slices.DeleteFunc(slices.Clone(ps), func(p *partition.Partition) bool { return p == nil })
}

// createTopic creates and opens a topic with the default replication
// factor. adminMu must not be held.
func (b *Broker) createTopic(name string, partitions int32, configs map[string]string) (*cluster.Topic, error) {
	rf := int32(1)
	if b.clustered() {
		rf = int32(b.brokerInt("default.replication.factor"))
	}
	return b.createTopicOn(name, partitions, rf, configs, nil)
}

// createTopicOn is createTopic with the partitions' replicas chosen by
// the request (CreateTopics' replica assignment, in a cluster); nil
// places them.
func (b *Broker) createTopicOn(name string, partitions, rf int32, configs map[string]string, replicas [][]int32) (*cluster.Topic, error) {
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	if err := b.catalog.ValidateNewTopic(name, partitions, configs); err != nil {
		return nil, err
	}
	if err := b.checkPartitionLimit(partitions); err != nil {
		return nil, err
	}
	if b.clustered() {
		// The catalog places the partitions; every node holding one
		// opens it when it applies the change (this one at once).
		if replicas == nil {
			var err error
			if replicas, err = b.placeNew(partitions, rf); err != nil {
				return nil, err
			}
		}
		t, err := b.catalog.CreateTopicOn(name, partitions, configs, false, replicas)
		if err != nil {
			return nil, err
		}
		b.log.Info("created topic", "topic", name, "partitions", partitions, "configs", configs, "replicas", replicas)
		return t, b.reconcileLocked()
	}
	if err := b.checkNewDirs(name, 0, partitions); err != nil {
		return nil, err
	}
	t, err := b.catalog.CreateTopic(name, partitions, configs, false)
	if err != nil {
		return nil, err
	}
	ps := make([]*partition.Partition, partitions)
	for i := range ps {
		p, err := b.openPartition(t, int32(i))
		if err != nil {
			for _, q := range ps[:i] {
				q.Close()
			}
			b.catalog.DeleteTopic(name)
			return nil, err
		}
		ps[i] = p
	}
	b.partsMu.Lock()
	b.parts[name] = ps
	b.partsMu.Unlock()
	b.log.Info("created topic", "topic", name, "partitions", partitions, "configs", configs)
	return t, nil
}

// deleteTopic removes a topic from the catalog, then its data.
func (b *Broker) deleteTopic(name string) error {
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	t, err := b.catalog.DeleteTopic(name)
	if err != nil {
		return err
	}
	b.partsMu.Lock()
	ps := b.parts[name]
	delete(b.parts, name)
	b.partsMu.Unlock()
	var firstErr error
	for _, p := range ps {
		if p == nil {
			continue // held by another node, which deletes it
		}
		if _, err := p.Delete(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	// A directory left behind stays listed as deleting; the next start or
	// creation of that name finishes it.
	if firstErr == nil {
		firstErr = b.finishDeletions(name)
	}
	b.metrics.forgetTopic(name)
	if !b.hosting() {
		// The group coordinator runs on another node of the cluster.
	} else if err := b.coords().groups.DropDeletedTopicsNow(); err != nil {
		b.log.Warn("dropping committed offsets of a deleted topic", "topic", name, "err", err)
	}
	b.log.Info("deleted topic", "topic", name, "partitions", t.Partitions)
	return firstErr
}

// refuseInternal is the answer to any client write to a broker-owned
// topic (produce, markers, deletion, truncation, new partitions, config):
// INVALID_TOPIC_EXCEPTION, as Kafka answers a produce to one.
func refuseInternal(t *cluster.Topic) error {
	if !t.Internal {
		return nil
	}
	return &kerrError{kerr.InvalidTopicException, fmt.Sprintf("%s is an internal topic written only by the broker", t.Name)}
}

// internalTopic reports whether topic is a broker-owned topic.
func (b *Broker) internalTopic(topic string) bool {
	t, ok := b.catalog.Topic(topic)
	return ok && t.Internal
}

// errPartitionLimit refuses partitions beyond max.broker.partitions.
var errPartitionLimit = errors.New("partition limit reached")

// checkPartitionLimit refuses adding n partitions when the broker would
// then hold more than max.broker.partitions. Each open partition costs
// file descriptors and memory, and creating one costs fsyncs under
// adminMu, so without a bound one CreateTopics could exhaust the
// descriptors or hold every admin request for minutes. Called under
// adminMu, the only place partitions are added.
func (b *Broker) checkPartitionLimit(n int32) error {
	limit := b.brokerInt("max.broker.partitions")
	b.partsMu.RLock()
	held := int64(0)
	for _, ps := range b.parts {
		for _, p := range ps {
			if p != nil {
				held++
			}
		}
	}
	b.partsMu.RUnlock()
	if held+int64(n) > limit {
		return fmt.Errorf("%w: this broker holds %d partitions and at most %d (max.broker.partitions); %d more refused",
			errPartitionLimit, held, limit, n)
	}
	return nil
}

// addPartitions raises a topic's partition count.
func (b *Broker) addPartitions(name string, count int32) error {
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	old, ok := b.catalog.Topic(name)
	if !ok {
		return fmt.Errorf("%w: %q", cluster.ErrUnknownTopic, name)
	}
	if count <= old.Partitions {
		_, err := b.catalog.SetPartitions(name, count, nil) // produces the descriptive error
		return err
	}
	if b.clustered() {
		rf := int32(1)
		if len(old.Replicas) > 0 {
			rf = int32(len(old.Replicas[0]))
		}
		replicas, err := b.placeNew(count-old.Partitions, rf)
		if err != nil {
			return err
		}
		if _, err := b.catalog.SetPartitions(name, count, replicas); err != nil {
			return err
		}
		return b.reconcileLocked()
	}
	if err := b.checkPartitionLimit(count - old.Partitions); err != nil {
		return err
	}
	if err := b.checkNewDirs(name, old.Partitions, count); err != nil {
		return err
	}
	t, err := b.catalog.SetPartitions(name, count, nil)
	if err != nil {
		return err
	}
	ps := append([]*partition.Partition(nil), b.partitions(name)...)
	for i := old.Partitions; i < count; i++ {
		p, err := b.openPartition(t, i)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	b.partsMu.Lock()
	b.parts[name] = ps
	b.partsMu.Unlock()
	return nil
}

// applyTopicConfig pushes a topic's effective log settings to its open
// partitions after a config change.
func (b *Broker) applyTopicConfig(t *cluster.Topic) {
	cfg := b.logConfig(t)
	for _, p := range b.partitions(t.Name) {
		p.SetConfig(cfg)
	}
}

// applyAllTopicConfigs re-resolves every topic after a broker-level change.
func (b *Broker) applyAllTopicConfigs() {
	for _, t := range b.catalog.Topics() {
		b.applyTopicConfig(t)
	}
}

// every runs fn at the interval the broker key intervalKey sets (ms) until
// the broker closes; the caller has done b.bg.Add(1).
func (b *Broker) every(intervalKey string, fn func(now time.Time)) {
	interval := time.Duration(b.brokerInt(intervalKey)) * time.Millisecond
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	b.everyInterval(interval, fn)
}

// everyInterval runs fn every interval until the broker closes; it is one
// of b.bg's goroutines.
func (b *Broker) everyInterval(interval time.Duration, fn func(now time.Time)) {
	defer b.bg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case now := <-tick.C:
			fn(now)
		}
	}
}

// ExpireProducers forgets, on every partition, producers idle longer than
// producer.id.expiration.ms without an open transaction.
func (b *Broker) ExpireProducers(now time.Time) {
	if b.clustered() {
		b.expireReplicated()
	}
	for _, p := range b.allPartitions() {
		if b.replicaOf(p) != nil {
			continue // expired through its group, at the same point on every replica
		}
		if _, err := p.ExpireProducers(now.UnixMilli()); err != nil {
			b.log.Error("snapshot after expiring producers failed", "topic", p.Topic, "partition", p.Index, "err", err)
		}
	}
}

// ApplyRetention deletes whole segments past each topic's retention.
func (b *Broker) ApplyRetention(now time.Time) {
	for _, p := range b.allPartitions() {
		n, err := p.ApplyRetention(now)
		if err != nil {
			b.log.Error("retention failed", "topic", p.Topic, "partition", p.Index, "err", err)
			continue
		}
		if n > 0 {
			b.log.Info("retention deleted segments", "topic", p.Topic, "partition", p.Index, "segments", n, "log_start_offset", p.LogStartOffset())
		}
	}
}

// Close stops background work and fsyncs and closes every partition. The
// server must have been closed first so no request is in flight.
func (b *Broker) Close() error {
	if b.clustered() {
		// A controlled shutdown: the partitions this node leads get a new
		// leader now rather than after an election timeout.
		b.transferLeaderships(2 * b.cfg.Cluster.ElectionTimeout)
	}
	b.coordMu.Lock()
	b.closing = true // no load by hostCoordinatorsPass from now on
	b.unloadCoordinators()
	b.coordMu.Unlock()
	b.cancel()
	b.bg.Wait()
	all := b.allPartitions()
	err := b.closePartitions()
	// Closing fsynced every healthy log to its end.
	err = errors.Join(err, b.writeRecoveryPoints(all))
	if b.node != nil {
		b.closePeers()
		err = errors.Join(err, b.node.quorum.Close())
	}
	// Last: the next broker on this directory may start once every file
	// in it is closed.
	return errors.Join(err, b.dataDir.Close())
}

func (b *Broker) closePartitions() error {
	b.partsMu.Lock()
	defer b.partsMu.Unlock()
	var errs []error
	for _, ps := range b.parts {
		for _, p := range ps {
			if p == nil {
				continue
			}
			if err := b.closeReplica(p); err != nil {
				errs = append(errs, err)
			}
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	b.parts = map[string][]*partition.Partition{}
	return errors.Join(errs...)
}

// handlerFunc serves one API.
type handlerFunc func(b *Broker, ctx context.Context, r *server.Request) server.Reply

type apiEntry struct {
	lo, hi int16
	fn     handlerFunc
}

var apis = map[int16]apiEntry{}

// register is called from each API file's init.
func register(key, lo, hi int16, fn handlerFunc) {
	apis[key] = apiEntry{lo: lo, hi: hi, fn: fn}
}

// Versions implements server.Handler.
func (b *Broker) Versions(key int16) (int16, int16, bool) {
	e, ok := apis[key]
	return e.lo, e.hi, ok
}

// Handle implements server.Handler.
// The time the handler takes is metered for request_percentage, and
// quotas throttle the client through its response (quotas.go).
func (b *Broker) Handle(ctx context.Context, r *server.Request) server.Reply {
	start := time.Now()
	var reply server.Reply
	if refusal := b.gateRequest(r); refusal != nil {
		reply = immediate(refusal)
	} else if refusal := b.clusterGate(r); refusal != nil {
		reply = immediate(refusal)
	} else if p := b.splitDenied(r); p != nil {
		reply = b.handlePartial(ctx, r, p)
	} else {
		reply = apis[r.Header.APIKey].fn(b, ctx, r)
	}
	reply = b.countingErrors(r.Header.APIKey, reply)
	return b.finishReply(r, reply, time.Since(start))
}

// countingErrors counts the error codes of a reply's response once it
// exists (deferred replies: when the writer builds it).
func (b *Broker) countingErrors(key int16, reply server.Reply) server.Reply {
	switch {
	case reply.Wait != nil:
		wait := reply.Wait
		reply.Wait = func() kmsg.Response {
			resp := wait()
			b.metrics.countErrors(key, resp)
			return resp
		}
	case reply.Response != nil:
		b.metrics.countErrors(key, reply.Response)
	}
	return reply
}

// immediate is a reply whose response is ready now (no deferred wait).
func immediate(resp kmsg.Response) server.Reply { return server.Reply{Response: resp} }
