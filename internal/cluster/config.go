package cluster

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/security"
)

// ConfigType is the Kafka config type reported by DescribeConfigs v3+.
type ConfigType int8

// Kafka's config type codes.
const (
	TypeBoolean  ConfigType = 1
	TypeString   ConfigType = 2
	TypeInt      ConfigType = 3
	TypeShort    ConfigType = 4
	TypeLong     ConfigType = 5
	TypeDouble   ConfigType = 6
	TypeList     ConfigType = 7
	TypeClass    ConfigType = 8
	TypePassword ConfigType = 9
)

// ConfigSource is where an effective value came from (DescribeConfigs).
type ConfigSource int8

// Kafka's config source codes.
const (
	SourceDynamicTopic         ConfigSource = 1
	SourceDynamicBroker        ConfigSource = 2
	SourceDynamicDefaultBroker ConfigSource = 3
	SourceStaticBroker         ConfigSource = 4
	SourceDefault              ConfigSource = 5
)

// ConfigDef describes one topic-level config key.
type ConfigDef struct {
	Name string
	Type ConfigType
	// Default is the built-in default when no broker key sets it.
	Default string
	// BrokerKey is the broker config that supplies the topic default
	// (retention.ms ← log.retention.ms); empty if none.
	BrokerKey string
	// Effective reports whether the broker acts on the value. Keys that are
	// accepted for compatibility but have no effect on a single node are
	// listed in docs/DESIGN.md.
	Effective bool
	validate  func(string) error
}

func longMin(min int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a valid long", v)
		}
		if n < min {
			return fmt.Errorf("value %d is below the minimum %d", n, min)
		}
		return nil
	}
}

// longMinOrUnbounded accepts -1 (Kafka's "unbounded") or at least min.
func longMinOrUnbounded(min int64) func(string) error { return orMinusOne(longMin(min)) }

// orMinusOne accepts -1 (Kafka's "unbounded" or "the OS default", by key)
// or what valid accepts.
func orMinusOne(valid func(string) error) func(string) error {
	return func(v string) error {
		if v == "-1" {
			return nil
		}
		return valid(v)
	}
}

func intMin(min int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a valid int", v)
		}
		if n < min {
			return fmt.Errorf("value %d is below the minimum %d", n, min)
		}
		return nil
	}
}

// intRange is intMin with an upper bound, for keys whose value sizes
// memory (quota.window.num samples per metered client).
func intRange(min, max int64) func(string) error {
	return func(v string) error {
		if err := intMin(min)(v); err != nil {
			return err
		}
		if n, _ := strconv.ParseInt(v, 10, 32); n > max {
			return fmt.Errorf("value %d is above the maximum %d", n, max)
		}
		return nil
	}
}

func oneOf(vals ...string) func(string) error {
	return func(v string) error {
		for _, ok := range vals {
			if v == ok {
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(vals, ", "))
	}
}

func boolean(v string) error {
	if v != "true" && v != "false" {
		return fmt.Errorf("%q is not a boolean", v)
	}
	return nil
}

// cleanupPolicy checks cleanup.policy: a list of "delete" and "compact"
// (Kafka's ValidList), at least one.
func cleanupPolicy(v string) error {
	items := 0
	for _, p := range strings.Split(v, ",") {
		switch strings.TrimSpace(p) {
		case "delete", "compact":
			items++
		default:
			return fmt.Errorf("cleanup.policy item %q is not one of delete, compact", strings.TrimSpace(p))
		}
	}
	if items == 0 {
		return fmt.Errorf("cleanup.policy is empty")
	}
	return nil
}

// PolicyCompacts reports whether a cleanup.policy value includes compact.
func PolicyCompacts(v string) bool { return policyHas(v, "compact") }

// PolicyDeletes reports whether a cleanup.policy value includes delete
// (time and size retention).
func PolicyDeletes(v string) bool { return policyHas(v, "delete") }

func policyHas(v, item string) bool {
	for _, p := range strings.Split(v, ",") {
		if strings.TrimSpace(p) == item {
			return true
		}
	}
	return false
}

// doubleRange accepts a number in [lo, hi].
func doubleRange(lo, hi float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		if f < lo || f > hi || math.IsNaN(f) {
			return fmt.Errorf("value %v is not in [%v, %v]", f, lo, hi)
		}
		return nil
	}
}

// doublePositive accepts a number above zero.
func doublePositive(v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", v)
	}
	if !(f > 0) {
		return fmt.Errorf("value %v must be above 0", f)
	}
	return nil
}

// CompressionTypes are the values of compression.type: "producer" stores
// batches as sent, the others are the codec every batch is stored in.
var CompressionTypes = []string{"uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"}

var compressionType = oneOf(CompressionTypes...)

// gzipLevel accepts Kafka's -1 (the library default) or 1-9.
func gzipLevel(v string) error {
	if v == "-1" {
		return nil
	}
	return intRange(1, 9)(v)
}

var topicConfigDefs = []ConfigDef{
	{Name: "cleanup.policy", Type: TypeList, Default: "delete", BrokerKey: "log.cleanup.policy", Effective: true, validate: cleanupPolicy},
	{Name: "compression.type", Type: TypeString, Default: "producer", BrokerKey: "compression.type", Effective: true, validate: compressionType},
	// Levels of the codec compression.type names (KIP-390), Kafka's
	// ranges and defaults; used only when the broker re-encodes.
	{Name: "compression.gzip.level", Type: TypeInt, Default: "-1", BrokerKey: "compression.gzip.level", Effective: true, validate: gzipLevel},
	{Name: "compression.lz4.level", Type: TypeInt, Default: "9", BrokerKey: "compression.lz4.level", Effective: true, validate: intRange(1, 17)},
	{Name: "compression.zstd.level", Type: TypeInt, Default: "3", BrokerKey: "compression.zstd.level", Effective: true, validate: intRange(-131072, 22)},
	{Name: "retention.ms", Type: TypeLong, Default: "604800000", BrokerKey: "log.retention.ms", Effective: true, validate: longMin(-1)},
	{Name: "retention.bytes", Type: TypeLong, Default: "-1", BrokerKey: "log.retention.bytes", Effective: true, validate: longMin(-1)},
	{Name: "segment.bytes", Type: TypeInt, Default: "1073741824", BrokerKey: "log.segment.bytes", Effective: true, validate: intMin(14)},
	{Name: "segment.ms", Type: TypeLong, Default: "604800000", BrokerKey: "log.roll.ms", Effective: true, validate: longMin(1)},
	{Name: "max.message.bytes", Type: TypeInt, Default: "1048588", BrokerKey: "message.max.bytes", Effective: true, validate: intMin(0)},
	{Name: "message.timestamp.type", Type: TypeString, Default: "CreateTime", BrokerKey: "log.message.timestamp.type", Effective: true, validate: oneOf("CreateTime", "LogAppendTime")},
	{Name: "index.interval.bytes", Type: TypeInt, Default: "4096", BrokerKey: "log.index.interval.bytes", Effective: true, validate: intMin(0)},
	{Name: "flush.messages", Type: TypeLong, Default: "9223372036854775807", BrokerKey: "log.flush.interval.messages", Effective: false, validate: longMin(1)},
	{Name: "flush.ms", Type: TypeLong, Default: "9223372036854775807", BrokerKey: "log.flush.interval.ms", Effective: false, validate: longMin(0)},
	{Name: "min.insync.replicas", Type: TypeInt, Default: "1", BrokerKey: "min.insync.replicas", Effective: true, validate: intMin(1)},
	{Name: "unclean.leader.election.enable", Type: TypeBoolean, Default: "false", BrokerKey: "unclean.leader.election.enable", Effective: false, validate: boolean},
	{Name: "segment.index.bytes", Type: TypeInt, Default: "10485760", BrokerKey: "log.index.size.max.bytes", Effective: false, validate: intMin(4)},
	{Name: "segment.jitter.ms", Type: TypeLong, Default: "0", BrokerKey: "log.roll.jitter.ms", Effective: false, validate: longMin(0)},
	{Name: "file.delete.delay.ms", Type: TypeLong, Default: "60000", BrokerKey: "log.segment.delete.delay.ms", Effective: false, validate: longMin(0)},
	{Name: "preallocate", Type: TypeBoolean, Default: "false", BrokerKey: "log.preallocate", Effective: false, validate: boolean},
	{Name: "delete.retention.ms", Type: TypeLong, Default: "86400000", BrokerKey: "log.cleaner.delete.retention.ms", Effective: true, validate: longMin(0)},
	{Name: "min.compaction.lag.ms", Type: TypeLong, Default: "0", BrokerKey: "log.cleaner.min.compaction.lag.ms", Effective: true, validate: longMin(0)},
	{Name: "max.compaction.lag.ms", Type: TypeLong, Default: "9223372036854775807", BrokerKey: "log.cleaner.max.compaction.lag.ms", Effective: true, validate: longMin(1)},
	{Name: "min.cleanable.dirty.ratio", Type: TypeDouble, Default: "0.5", BrokerKey: "log.cleaner.min.cleanable.ratio", Effective: true, validate: doubleRange(0, 1)},
	{Name: "message.timestamp.before.max.ms", Type: TypeLong, Default: "9223372036854775807", BrokerKey: "log.message.timestamp.before.max.ms", Effective: true, validate: longMin(0)},
	{Name: "message.timestamp.after.max.ms", Type: TypeLong, Default: "9223372036854775807", BrokerKey: "log.message.timestamp.after.max.ms", Effective: true, validate: longMin(0)},
	{Name: "message.downconversion.enable", Type: TypeBoolean, Default: "true", BrokerKey: "log.message.downconversion.enable", Effective: false, validate: boolean},
	{Name: "local.retention.ms", Type: TypeLong, Default: "-2", BrokerKey: "log.local.retention.ms", Effective: false, validate: longMin(-2)},
	{Name: "local.retention.bytes", Type: TypeLong, Default: "-2", BrokerKey: "log.local.retention.bytes", Effective: false, validate: longMin(-2)},
	{Name: "remote.storage.enable", Type: TypeBoolean, Default: "false", Effective: false, validate: oneOf("false")},
}

var topicConfigIndex = func() map[string]*ConfigDef {
	m := map[string]*ConfigDef{}
	for i := range topicConfigDefs {
		m[topicConfigDefs[i].Name] = &topicConfigDefs[i]
	}
	return m
}()

// TopicConfigDefs returns every topic config key in name order.
func TopicConfigDefs() []ConfigDef {
	out := append([]ConfigDef(nil), topicConfigDefs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupTopicConfig returns the definition of a topic config key.
func LookupTopicConfig(name string) (*ConfigDef, bool) {
	d, ok := topicConfigIndex[name]
	return d, ok
}

// ValidateTopicConfig checks one topic-level key and value, returning an
// error suitable for an INVALID_CONFIG message.
func ValidateTopicConfig(name, value string) error {
	d, ok := topicConfigIndex[name]
	if !ok {
		return fmt.Errorf("unknown topic config %q", name)
	}
	if err := d.validate(value); err != nil {
		return fmt.Errorf("invalid value for %s: %w", name, err)
	}
	return nil
}

// BrokerConfigDef describes one broker-level key.
type BrokerConfigDef struct {
	Name    string
	Type    ConfigType
	Default string
	// Dynamic keys can be changed at runtime with AlterConfigs on the broker
	// resource; others are read at start only. Kafka's "Update Mode" decides:
	// cluster-wide and per-broker keys are dynamic, read-only keys
	// (num.partitions, auto.create.topics.enable, delete.topic.enable, ...)
	// are not, so a client cannot flip what the operator fixed.
	Dynamic  bool
	validate func(string) error
}

var brokerConfigDefs = []BrokerConfigDef{
	{Name: "node.id", Type: TypeInt, Default: "0", validate: intMin(0)},
	{Name: "broker.id", Type: TypeInt, Default: "0", validate: intMin(0)},
	{Name: "log.dirs", Type: TypeString, Default: "./data"},
	{Name: "num.partitions", Type: TypeInt, Default: "1", validate: intMin(1)},
	{Name: "default.replication.factor", Type: TypeShort, Default: "1", validate: intRange(1, 32767)},
	// Replication (docs/DESIGN.md, "Replication"): a follower whose
	// replicated index has not reached the leader's last index of this
	// long ago leaves the ISR.
	{Name: "replica.lag.time.max.ms", Type: TypeLong, Default: "30000", validate: longMin(1)},
	// Preferred leaders (the first replica): a leader hands over to an
	// in-sync preferred replica at once for an empty partition, else at
	// the next check.
	{Name: "auto.leader.rebalance.enable", Type: TypeBoolean, Default: "true", validate: boolean},
	{Name: "leader.imbalance.check.interval.seconds", Type: TypeLong, Default: "300", validate: longMin(1)},
	{Name: "auto.create.topics.enable", Type: TypeBoolean, Default: "true", validate: boolean},
	// exactly's own: topics Metadata may auto-create per minute (burst
	// included); Kafka has no bound.
	{Name: "auto.create.topics.max.per.minute", Type: TypeInt, Default: "100", validate: intMin(0)},
	{Name: "delete.topic.enable", Type: TypeBoolean, Default: "true", validate: boolean},
	{Name: "message.max.bytes", Type: TypeInt, Default: "1048588", Dynamic: true, validate: intMin(0)},
	{Name: "socket.request.max.bytes", Type: TypeInt, Default: "104857600", validate: intMin(1024)},
	// SO_SNDBUF and SO_RCVBUF of accepted connections; -1 leaves the
	// kernel's autotuning. Kafka's defaults are 102400 each. Ours: a
	// 256 KiB send buffer served loopback read_committed fetches
	// 1.09-1.18x faster than autotuning and about 1.2x faster than 128 or
	// 512 KiB (docs/DESIGN.md, Request flow); the receive side was not
	// measured, so it keeps autotuning.
	{Name: "socket.send.buffer.bytes", Type: TypeInt, Default: "262144", validate: orMinusOne(intMin(1))},
	{Name: "socket.receive.buffer.bytes", Type: TypeInt, Default: "-1", validate: orMinusOne(intMin(1))},
	{Name: "connections.max.idle.ms", Type: TypeLong, Default: "600000", validate: longMin(0)},
	// Network bounds against hostile clients (docs/DESIGN.md, "Limits and
	// hostile input"). Kafka leaves the first three unbounded; the last
	// three are this broker's own.
	{Name: "queued.max.request.bytes", Type: TypeLong, Default: "536870912", validate: longMinOrUnbounded(1)},
	{Name: "max.connections", Type: TypeInt, Default: "4096", validate: intMin(1)},
	{Name: "max.connections.per.ip", Type: TypeInt, Default: "1024", validate: intMin(1)},
	// KIP-578's name (Kafka never shipped it); exactly's guard, read-only:
	// see docs/DESIGN.md, Limits and hostile input.
	{Name: "max.broker.partitions", Type: TypeInt, Default: "10000", validate: intMin(1)},
	{Name: "max.connections.per.ip.overrides", Type: TypeString, Default: "", validate: connectionOverrides},
	{Name: "fetch.max.bytes", Type: TypeInt, Default: "57671680", validate: intMin(1024)},
	{Name: "fetch.partition.max.bytes", Type: TypeInt, Default: "1048576", validate: intMin(1)},
	{Name: "socket.request.read.timeout.ms", Type: TypeLong, Default: "30000", validate: longMin(1)},
	{Name: "socket.response.write.timeout.ms", Type: TypeLong, Default: "30000", validate: longMin(1)},
	{Name: "log.segment.bytes", Type: TypeInt, Default: "1073741824", Dynamic: true, validate: intMin(14)},
	{Name: "log.roll.ms", Type: TypeLong, Default: "604800000", Dynamic: true, validate: longMin(1)},
	{Name: "log.roll.hours", Type: TypeInt, Default: "168", validate: intMin(1)},
	{Name: "log.retention.ms", Type: TypeLong, Default: "604800000", Dynamic: true, validate: longMin(-1)},
	{Name: "log.retention.minutes", Type: TypeInt, Default: "10080", validate: intMin(-1)},
	{Name: "log.retention.hours", Type: TypeInt, Default: "168", validate: intMin(-1)},
	{Name: "log.retention.bytes", Type: TypeLong, Default: "-1", Dynamic: true, validate: longMin(-1)},
	{Name: "log.retention.check.interval.ms", Type: TypeLong, Default: "300000", validate: longMin(1)},
	{Name: "log.index.interval.bytes", Type: TypeInt, Default: "4096", Dynamic: true, validate: intMin(0)},
	// exactly's own: how much of each partition's durable tail stays in the
	// page cache once fsynced (log.Config.CacheTailBytes); -1 leaves the
	// cache to the kernel.
	{Name: "log.cache.tail.bytes", Type: TypeLong, Default: "134217728", validate: longMinOrUnbounded(1)},
	{Name: "log.flush.interval.messages", Type: TypeLong, Default: "9223372036854775807", Dynamic: true, validate: longMin(1)},
	{Name: "log.flush.interval.ms", Type: TypeLong, Default: "9223372036854775807", Dynamic: true, validate: longMin(0)},
	{Name: "log.flush.offset.checkpoint.interval.ms", Type: TypeInt, Default: "10000", validate: intMin(1)},
	{Name: "log.flush.scheduler.interval.ms", Type: TypeLong, Default: "9223372036854775807", validate: longMin(0)},
	{Name: "log.cleanup.policy", Type: TypeList, Default: "delete", Dynamic: true, validate: cleanupPolicy},
	// The log cleaner (compaction); Kafka's keys and defaults.
	// log.cleaner.dedupe.buffer.size is shared by the threads; its floor
	// (1 KiB, Kafka has none) only keeps each thread's key map usable.
	{Name: "log.cleaner.enable", Type: TypeBoolean, Default: "true", validate: boolean},
	{Name: "log.cleaner.threads", Type: TypeInt, Default: "1", Dynamic: true, validate: intRange(0, 64)},
	{Name: "log.cleaner.dedupe.buffer.size", Type: TypeLong, Default: "134217728", Dynamic: true, validate: longMin(1024)},
	{Name: "log.cleaner.io.max.bytes.per.second", Type: TypeDouble, Default: "1.7976931348623157E308", Dynamic: true, validate: doublePositive},
	{Name: "log.cleaner.backoff.ms", Type: TypeLong, Default: "15000", Dynamic: true, validate: longMin(0)},
	{Name: "log.message.timestamp.type", Type: TypeString, Default: "CreateTime", Dynamic: true, validate: oneOf("CreateTime", "LogAppendTime")},
	{Name: "log.message.timestamp.before.max.ms", Type: TypeLong, Default: "9223372036854775807", Dynamic: true, validate: longMin(0)},
	{Name: "log.message.timestamp.after.max.ms", Type: TypeLong, Default: "9223372036854775807", Dynamic: true, validate: longMin(0)},
	{Name: "compression.type", Type: TypeString, Default: "producer", Dynamic: true, validate: compressionType},
	{Name: "min.insync.replicas", Type: TypeInt, Default: "1", Dynamic: true, validate: intMin(1)},
	{Name: "unclean.leader.election.enable", Type: TypeBoolean, Default: "false", Dynamic: true, validate: boolean},
	// The coordinators' internal topics on a cluster (docs/DESIGN.md,
	// "Replication"): one replica set of the larger replication factor,
	// capped by the voters; a single node ignores them.
	{Name: "offsets.topic.replication.factor", Type: TypeShort, Default: "3", validate: intRange(1, 32767)},
	{Name: "transaction.state.log.replication.factor", Type: TypeShort, Default: "3", validate: intRange(1, 32767)},
	{Name: "transaction.state.log.min.isr", Type: TypeInt, Default: "2", validate: intMin(1)},
	{Name: "share.coordinator.state.topic.replication.factor", Type: TypeShort, Default: "3", validate: intRange(1, 32767)},
	{Name: "share.coordinator.state.topic.min.isr", Type: TypeShort, Default: "2", validate: intRange(1, 32767)},
	// Kafka's thread pools, in the server.properties Kafka ships: accepted
	// so that file starts a broker, with no effect (a goroutine serves each
	// connection, and recovery opens the partitions one after another).
	{Name: "num.network.threads", Type: TypeInt, Default: "3", validate: intMin(1)},
	{Name: "num.io.threads", Type: TypeInt, Default: "8", validate: intMin(1)},
	{Name: "num.recovery.threads.per.data.dir", Type: TypeInt, Default: "2", validate: intMin(1)},
	{Name: "group.initial.rebalance.delay.ms", Type: TypeInt, Default: "3000", validate: intMin(0)},
	{Name: "group.min.session.timeout.ms", Type: TypeInt, Default: "6000", validate: intMin(0)},
	{Name: "group.max.session.timeout.ms", Type: TypeInt, Default: "1800000", validate: intMin(0)},
	{Name: "group.max.size", Type: TypeInt, Default: "2147483647", validate: intMin(1)},
	{Name: "group.consumer.session.timeout.ms", Type: TypeInt, Default: "45000", validate: intMin(1)},
	{Name: "group.consumer.heartbeat.interval.ms", Type: TypeInt, Default: "5000", validate: intMin(1)},
	{Name: "group.consumer.max.size", Type: TypeInt, Default: "2147483647", validate: intMin(1)},
	{Name: "group.share.record.lock.duration.ms", Type: TypeInt, Default: "30000", validate: intRange(1000, 3600000)},
	{Name: "group.share.min.record.lock.duration.ms", Type: TypeInt, Default: "15000", validate: intRange(1000, 30000)},
	{Name: "group.share.max.record.lock.duration.ms", Type: TypeInt, Default: "60000", validate: intRange(30000, 3600000)},
	{Name: "group.share.delivery.count.limit", Type: TypeInt, Default: "5", validate: intRange(2, 10)},
	{Name: "group.share.partition.max.record.locks", Type: TypeInt, Default: "2000", validate: intRange(100, 10000)},
	{Name: "group.share.max.share.sessions", Type: TypeInt, Default: "2000", validate: intRange(1, 1000000)},
	{Name: "group.share.session.timeout.ms", Type: TypeInt, Default: "45000", validate: intMin(1)},
	{Name: "group.share.heartbeat.interval.ms", Type: TypeInt, Default: "5000", validate: intMin(1)},
	{Name: "group.share.max.size", Type: TypeInt, Default: "200", validate: intRange(1, 1000)},
	{Name: "group.share.max.groups", Type: TypeInt, Default: "10", validate: intRange(1, 100000)},
	{Name: "offsets.retention.minutes", Type: TypeInt, Default: "10080", validate: intMin(1)},
	{Name: "offsets.retention.check.interval.ms", Type: TypeLong, Default: "600000", validate: longMin(1)},
	{Name: "offsets.topic.segment.bytes", Type: TypeInt, Default: "104857600", validate: intMin(1024)},
	{Name: "transaction.max.timeout.ms", Type: TypeInt, Default: "900000", validate: intMin(1)},
	{Name: "transactional.id.expiration.ms", Type: TypeInt, Default: "604800000", validate: intMin(1)},
	{Name: "producer.id.expiration.ms", Type: TypeInt, Default: "86400000", validate: intMin(1)},
	{Name: "quota.window.num", Type: TypeInt, Default: "11", validate: intRange(1, 1000)},
	{Name: "quota.window.size.seconds", Type: TypeInt, Default: "1", validate: intRange(1, 3600)},
	{Name: "producer.id.expiration.check.interval.ms", Type: TypeInt, Default: "600000", validate: intMin(1)},
	// exactly's own: producers one partition's state keeps (Kafka has no
	// bound); see docs/DESIGN.md, Limits and hostile input.
	{Name: "producer.id.max.per.partition", Type: TypeInt, Default: "10000", validate: intMin(1)},
	// A cluster (docs/DESIGN.md, "Cluster"): KRaft's keys, read at start.
	// controller.quorum.voters empty is a single node, as always.
	{Name: "process.roles", Type: TypeList, Default: "broker,controller", validate: processRoles},
	{Name: "controller.quorum.voters", Type: TypeList, Default: "", validate: quorumVoters},
	// KIP-853's dynamic quorum, as Kafka's shipped server.properties sets
	// it: accepted when it names only this node's own controller listener
	// (a single node); a cluster is formed from controller.quorum.voters.
	{Name: "controller.quorum.bootstrap.servers", Type: TypeList, Default: "", validate: bootstrapServers},
	{Name: "controller.listener.names", Type: TypeList, Default: "CONTROLLER"},
	{Name: "inter.broker.listener.name", Type: TypeString, Default: ""},
	{Name: "controller.quorum.election.timeout.ms", Type: TypeInt, Default: "1000", validate: intRange(100, 60000)},
	{Name: "broker.heartbeat.interval.ms", Type: TypeInt, Default: "2000", validate: intRange(10, 60000)},
	{Name: "broker.session.timeout.ms", Type: TypeInt, Default: "9000", validate: intRange(100, 600000)},
	// Listeners and security (docs/DESIGN.md, "Security"); read at start.
	{Name: "listeners", Type: TypeString, Default: "PLAINTEXT://127.0.0.1:9092"},
	{Name: "advertised.listeners", Type: TypeString, Default: ""},
	{Name: "listener.security.protocol.map", Type: TypeString, Default: security.DefaultProtocolMap, validate: protocolMap},
	{Name: "ssl.keystore.type", Type: TypeString, Default: "PEM", validate: oneOf("PEM")},
	{Name: "ssl.keystore.location", Type: TypeString, Default: ""},
	{Name: "ssl.truststore.type", Type: TypeString, Default: "PEM", validate: oneOf("PEM")},
	{Name: "ssl.truststore.location", Type: TypeString, Default: ""},
	{Name: "ssl.client.auth", Type: TypeString, Default: "none", validate: oneOf("none", "requested", "required")},
	{Name: "ssl.principal.mapping.rules", Type: TypeString, Default: "DEFAULT", validate: principalRules},
	// This broker's default; Kafka's is GSSAPI, which it does not serve.
	{Name: "sasl.enabled.mechanisms", Type: TypeList, Default: security.DefaultMechanisms, validate: saslMechanisms},
	{Name: "sasl.server.max.receive.size", Type: TypeInt, Default: "524288", validate: intMin(1)},
	{Name: "connections.max.reauth.ms", Type: TypeLong, Default: "0", validate: longMin(0)},
	// Authorization (docs/DESIGN.md, "Security"); empty = none, as Kafka.
	// Kafka's own class names are accepted so its server.properties work.
	{Name: "authorizer.class.name", Type: TypeString, Default: "",
		validate: oneOf("", "exactly", "org.apache.kafka.metadata.authorizer.StandardAuthorizer", "kafka.security.authorizer.AclAuthorizer")},
	{Name: "super.users", Type: TypeString, Default: "", validate: superUsers},
	// exactly's own: the Prometheus endpoint (--metrics-listen). A PEM
	// keystore turns it to HTTPS; basic-auth users are checked against
	// their SCRAM credentials (docs/DESIGN.md, "Security").
	{Name: "metrics.ssl.keystore.location", Type: TypeString, Default: ""},
	{Name: "metrics.basic.auth.users", Type: TypeList, Default: ""},
	{Name: "allow.everyone.if.no.acl.found", Type: TypeBoolean, Default: "false", validate: boolean},
}

// superUsers checks super.users: User:name principals separated by ';'.
func superUsers(v string) error {
	for _, p := range strings.Split(v, ";") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if typ, name, ok := strings.Cut(p, ":"); !ok || typ != "User" || name == "" {
			return fmt.Errorf("super.users entry %q: expected User:name", p)
		}
	}
	return nil
}

func protocolMap(v string) error {
	_, err := security.ParseProtocolMap(v)
	return err
}

func principalRules(v string) error {
	_, err := security.ParsePrincipalRules(v)
	return err
}

// SplitList is a list config's items (Kafka's TypeList: comma-separated,
// blanks around items and empty items dropped).
func SplitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParseConnectionOverrides reads max.connections.per.ip.overrides:
// "host:limit,..." where host is an IP address (IPv6 as is, e.g.
// "::1:5") or a host name, and limit a count ≥ 0 (0 refuses that host).
func ParseConnectionOverrides(v string) (map[string]int, error) {
	out := map[string]int{}
	for _, item := range SplitList(v) {
		i := strings.LastIndexByte(item, ':')
		if i <= 0 {
			return nil, fmt.Errorf("max.connections.per.ip.overrides: %q is not host:limit", item)
		}
		host := strings.TrimSpace(item[:i])
		n, err := strconv.Atoi(strings.TrimSpace(item[i+1:]))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("max.connections.per.ip.overrides: %q: the limit must be a count ≥ 0", item)
		}
		if _, dup := out[host]; dup {
			return nil, fmt.Errorf("max.connections.per.ip.overrides: %s appears twice", host)
		}
		out[host] = n
	}
	return out, nil
}

func connectionOverrides(v string) error {
	_, err := ParseConnectionOverrides(v)
	return err
}

func saslMechanisms(v string) error {
	for _, m := range strings.Split(v, ",") {
		switch strings.TrimSpace(m) {
		case security.MechPlain, security.MechScramSHA256, security.MechScramSHA512:
		default:
			return fmt.Errorf("SASL mechanism %q is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", m)
		}
	}
	return nil
}

var brokerConfigIndex = func() map[string]*BrokerConfigDef {
	m := map[string]*BrokerConfigDef{}
	for i := range brokerConfigDefs {
		m[brokerConfigDefs[i].Name] = &brokerConfigDefs[i]
	}
	// Topic-default keys named only on the topic side are broker keys too.
	for _, d := range topicConfigDefs {
		if d.BrokerKey != "" {
			if _, ok := m[d.BrokerKey]; !ok {
				m[d.BrokerKey] = &BrokerConfigDef{Name: d.BrokerKey, Type: d.Type, Default: d.Default, Dynamic: true, validate: d.validate}
			}
		}
	}
	return m
}()

// BrokerConfigDefs returns every broker key in name order.
func BrokerConfigDefs() []BrokerConfigDef {
	out := make([]BrokerConfigDef, 0, len(brokerConfigIndex))
	for _, d := range brokerConfigIndex {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupBrokerConfig returns the definition of a broker key.
func LookupBrokerConfig(name string) (*BrokerConfigDef, bool) {
	d, ok := brokerConfigIndex[name]
	return d, ok
}

// ValidateBrokerConfig checks one broker key and value. Unknown keys are
// rejected so typos in server.properties are caught at start.
func ValidateBrokerConfig(name, value string) error {
	d, ok := brokerConfigIndex[name]
	if !ok {
		return fmt.Errorf("unknown broker config %q", name)
	}
	if d.validate != nil {
		if err := d.validate(value); err != nil {
			return fmt.Errorf("invalid value for %s: %w", name, err)
		}
	}
	return nil
}

// Int64 parses a validated numeric config value; on the impossible parse
// failure it returns def.
func Int64(v string, def int64) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return def
	}
	return n
}

// Int32 parses a validated int config value, clamping to the int32 range.
func Int32(v string, def int32) int32 {
	n := Int64(v, int64(def))
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	if n < math.MinInt32 {
		return math.MinInt32
	}
	return int32(n)
}

// BrokerConfigDefault is a broker key's built-in default ("" for an
// unknown key).
func BrokerConfigDefault(key string) string { return brokerConfigIndex[key].Default }
