package broker

// Share-group wiring (KIP-932): the __share_group_state topic, the
// share.Coordinator that owns it, and what the other group APIs learn of
// share groups (ListGroups, DeleteGroups, the one group namespace, GROUP
// config resources).
//
// __share_group_state is an internal topic with one partition, created at
// start like __consumer_offsets and written only by the coordinator; it
// compacts itself (snapshot, then DeleteRecordsBefore), so retention is off.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/share"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// resourceGroup is the GROUP config resource type (KIP-848 group configs).
const resourceGroup = 32

// internalPartition returns partition 0 of a broker-owned internal topic,
// creating the topic on first start.
func (b *Broker) internalPartition(name string, configs map[string]string) (*partition.Partition, error) {
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	if t, ok := b.catalog.Topic(name); ok {
		if !t.Internal {
			b.log.Warn(name + " exists but is not marked internal (created by a client?); using it")
		}
		if p := b.partition(name, 0); p != nil {
			return p, nil
		}
		if !b.holds(t, 0) {
			return nil, errNotHere
		}
		return nil, fmt.Errorf("%s has no partition 0", name)
	}
	if err := b.checkNewDirs(name, 0, 1); err != nil {
		return nil, err
	}
	t, err := b.catalog.CreateTopic(name, 1, configs, true)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", name, err)
	}
	p, err := b.openPartition(t, 0)
	if err != nil {
		b.catalog.DeleteTopic(name)
		return nil, err
	}
	b.partsMu.Lock()
	b.parts[name] = []*partition.Partition{p}
	b.partsMu.Unlock()
	b.log.Info("created internal topic", "topic", name)
	return p, nil
}

func (b *Broker) shareConfig() share.Config {
	ms := func(key string) time.Duration { return time.Duration(b.brokerInt(key)) * time.Millisecond }
	return share.Config{
		RecordLockDuration: ms("group.share.record.lock.duration.ms"),
		MinRecordLock:      ms("group.share.min.record.lock.duration.ms"),
		MaxRecordLock:      ms("group.share.max.record.lock.duration.ms"),
		DeliveryCountLimit: int(b.brokerInt("group.share.delivery.count.limit")),
		MaxRecordLocks:     int(b.brokerInt("group.share.partition.max.record.locks")),
		MaxSessions:        int(b.brokerInt("group.share.max.share.sessions")),
		SessionTimeout:     ms("group.share.session.timeout.ms"),
		HeartbeatInterval:  ms("group.share.heartbeat.interval.ms"),
		MaxGroupSize:       int(b.brokerInt("group.share.max.size")),
		MaxGroups:          int(b.brokerInt("group.share.max.groups")),
	}
}

// shareStatePartition opens (creating on first start) __share_group_state.
func (b *Broker) shareStatePartition() (*partition.Partition, error) {
	segment, _ := b.catalog.BrokerConfig("offsets.topic.segment.bytes")
	return b.internalPartition(share.StateTopic, map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "segment.bytes": segment})
}

// startShareCoordinator replays __share_group_state from log and starts
// the share coordinator on it.
func (b *Broker) startShareCoordinator(log partition.StateLog) (*share.Coordinator, error) {
	c, err := share.Start(share.Options{
		Config: b.shareConfig(),
		Log:    log,
		Topics: catalogTopics{b.catalog},
		Partition: func(topic string, index int32) share.Source {
			if p := b.partition(topic, index); p != nil {
				return p
			}
			return nil
		},
		Logger: b.log.With("component", "share-coordinator"),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the share coordinator: %w", err)
	}
	return c, nil
}

// shareLimits are ShareFetch's broker bounds for one request.
func (b *Broker) shareLimits(r *server.Request) share.Limits {
	return share.Limits{
		MaxBytes:          int(b.brokerInt("fetch.max.bytes")),
		PartitionMaxBytes: int(b.brokerInt("fetch.partition.max.bytes")),
		MaxWait:           maxFetchWait,
		NodeID:            b.cfg.NodeID,
		TopicDenied:       b.topicDenied(r, acl.OpRead),
	}
}

// topicDenied reports, per topic, whether the principal lacks op on it
// (each topic decided and audited once per request).
func (b *Broker) topicDenied(r *server.Request, op acl.Operation) func(string) bool {
	if !b.authz.enabled || r.Conn == nil {
		return nil
	}
	seen := map[string]bool{}
	return func(topic string) bool {
		d, ok := seen[topic]
		if !ok {
			d = !b.authorized(r, op, acl.ResourceTopic, topic)
			seen[topic] = d
		}
		return d
	}
}

// groupDenied reports whether the principal lacks op on group (audited).
func (b *Broker) groupDenied(r *server.Request, op acl.Operation, g string) bool {
	return b.authz.enabled && r.Conn != nil && !b.authorized(r, op, acl.ResourceGroup, g)
}

// listShareGroups adds the share groups to a ListGroups answer, with its
// state and type filters.
func (b *Broker) listShareGroups(req *kmsg.ListGroupsRequest, resp *kmsg.ListGroupsResponse) {
	if resp.ErrorCode != 0 || !b.hosting() {
		return
	}
	if len(req.TypesFilter) > 0 && !containsFold(req.TypesFilter, "share") {
		return
	}
	for _, g := range b.coords().share.List() {
		if len(req.StatesFilter) > 0 && !containsFold(req.StatesFilter, g.State) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState, lg.GroupType = g.Name, "share", g.State, "share"
		resp.Groups = append(resp.Groups, lg)
	}
}

func containsFold(xs []string, x string) bool {
	for _, s := range xs {
		if strings.EqualFold(s, x) {
			return true
		}
	}
	return false
}

// deleteShareGroups answers DeleteGroups for the groups the group
// coordinator does not know but the share coordinator does.
func (b *Broker) deleteShareGroups(resp *kmsg.DeleteGroupsResponse) {
	if !b.hosting() {
		return
	}
	sc := b.coords().share
	for i := range resp.Groups {
		g := &resp.Groups[i]
		if g.ErrorCode == kerr.GroupIDNotFound.Code && sc.HasGroup(g.Group) {
			g.ErrorCode = sc.DeleteGroup(g.Group)
		}
	}
}

// refuseShareName answers a classic or consumer join of a name that is a
// share group (one namespace, as Kafka's).
func (b *Broker) refuseShareName(req kmsg.Request) kmsg.Response {
	var name string
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		name = r.Group
	case *kmsg.ConsumerGroupHeartbeatRequest:
		if r.MemberEpoch != 0 {
			return nil
		}
		name = r.Group
	default:
		return nil
	}
	if !b.hosting() || !b.coords().share.HasGroup(name) {
		return nil
	}
	return group.ErrorResponse(req, kerr.InconsistentGroupProtocol.Code)
}

// groupConfigErr maps a share-coordinator config error to the config
// APIs' error plumbing.
func groupConfigErr(err error) error {
	if err == nil {
		return nil
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return &kerrError{ke, err.Error()}
	}
	return err
}

// describeGroupConfigs lists a GROUP resource's configs: NOT_COORDINATOR
// on a node of a cluster that does not run the coordinators (a forwarded
// request that met them moving).
func (b *Broker) describeGroupConfigs(name string, names []string) ([]kmsg.DescribeConfigsResponseResourceConfig, error) {
	var out []kmsg.DescribeConfigsResponseResourceConfig
	if !b.hosting() {
		return nil, errGroupConfigsNotHere
	}
	for _, e := range b.coords().share.DescribeGroupConfigs(name, names) {
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name, c.Value = e.Name, kmsg.StringPtr(e.Value)
		c.Source = kmsg.ConfigSourceGroupConfig
		if e.IsDefault {
			c.Source = kmsg.ConfigSourceDefaultConfig
		}
		c.IsDefault = e.IsDefault
		out = append(out, c)
	}
	return out, nil
}

// shareReply answers from the connection's writer (long polls and fsync
// waits never block Handle).
func shareReply(fn func() kmsg.Response) server.Reply { return server.Reply{Wait: fn} }

// Share-group metrics. The counters follow Kafka's share-group-metrics
// (record-acknowledgement by ack-type) and SharePartitionMetrics
// (acquisition lock timeouts), summed over the broker's share partitions;
// the in-flight gauge is per group (at most group.share.max.groups).
var (
	descShareAcquired = prometheus.NewDesc("kafka_server_share_group_metrics_records_acquired_total",
		"Records handed out by ShareFetch, every delivery counted.", nil, nil)
	descShareRedelivered = prometheus.NewDesc("kafka_server_share_group_metrics_records_redelivered_total",
		"Records handed out again (delivery count above 1): released, or their acquisition lock expired, or their member left.", nil, nil)
	descShareAcks = prometheus.NewDesc("kafka_server_share_group_metrics_record_acknowledgement_total",
		"Records acknowledged, per acknowledgement type (accept, release, reject, renew).", []string{"ack_type"}, nil)
	descShareLockTimeouts = prometheus.NewDesc("kafka_server_share_group_metrics_acquisition_lock_timeout_total",
		"Acquisitions whose lock expired before an acknowledgement (the record was made available again, or archived at the limit).", nil, nil)
	descShareArchived = prometheus.NewDesc("kafka_server_share_group_metrics_records_archived_total",
		"Records archived at group.share.delivery.count.limit (released or expired after their last allowed delivery); rejected records are counted as acknowledgements.", nil, nil)
	descShareInFlight = prometheus.NewDesc("kafka_sharegroup_in_flight_records",
		"A share group's records between share-partition start and end offsets, per state (available, acquired, acknowledged, archived).",
		[]string{"sharegroup", "state"}, nil)
)

// shareCollector reports the share coordinator's counters and in-flight
// records at scrape time.
type shareCollector struct{ b *Broker }

// Describe implements prometheus.Collector.
func (c *shareCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descShareAcquired, descShareRedelivered, descShareAcks, descShareLockTimeouts, descShareArchived, descShareInFlight} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *shareCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.b.hosting() {
		return
	}
	st, groups := c.b.coords().share.Metrics()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descShareAcquired, st.Acquired)
	counter(descShareRedelivered, st.Redelivered)
	counter(descShareAcks, st.Accepted, "accept")
	counter(descShareAcks, st.Released, "release")
	counter(descShareAcks, st.Rejected, "reject")
	counter(descShareAcks, st.Renewed, "renew")
	counter(descShareLockTimeouts, st.LockExpired)
	counter(descShareArchived, st.Archived)
	for _, g := range groups {
		for state, n := range map[string]int{"available": g.Available, "acquired": g.Acquired, "acknowledged": g.Acknowledged, "archived": g.Archived} {
			ch <- prometheus.MustNewConstMetric(descShareInFlight, prometheus.GaugeValue, float64(n), g.Group, state)
		}
	}
}
