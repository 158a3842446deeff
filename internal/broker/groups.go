package broker

// Group coordinator wiring: the __consumer_offsets topic, the
// group.Coordinator that owns it, the group APIs' common handler, and the
// group metrics.
//
// __consumer_offsets is an internal topic with one partition, created at
// start through the catalog like any topic (so it shows up in metadata with
// IsInternal set) and written only by the coordinator. Its records are
// never deleted by time or size retention (retention.ms=-1): the
// coordinator compacts it itself by writing snapshots and raising the log
// start offset (see package group).

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// catalogTopics answers the coordinator's topic questions from the catalog.
type catalogTopics struct{ c *cluster.Catalog }

func topicInfo(t *cluster.Topic) group.TopicInfo {
	return group.TopicInfo{Name: t.Name, ID: t.ID, Partitions: t.Partitions}
}

// TopicByName implements group.TopicView.
func (v catalogTopics) TopicByName(name string) (group.TopicInfo, bool) {
	t, ok := v.c.Topic(name)
	if !ok {
		return group.TopicInfo{}, false
	}
	return topicInfo(t), true
}

// TopicByID implements group.TopicView.
func (v catalogTopics) TopicByID(id [16]byte) (group.TopicInfo, bool) {
	t, ok := v.c.TopicByID(id)
	if !ok {
		return group.TopicInfo{}, false
	}
	return topicInfo(t), true
}

// Topics implements group.TopicView; internal topics are included, as
// Kafka's server-side regex subscriptions include them.
func (v catalogTopics) Topics() []group.TopicInfo {
	ts := v.c.Topics()
	out := make([]group.TopicInfo, len(ts))
	for i, t := range ts {
		out[i] = topicInfo(t)
	}
	return out
}

// newUUID is a random member-id suffix, unique across restarts.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// offsetsPartition returns the __consumer_offsets partition, creating the
// internal topic on first start.
func (b *Broker) offsetsPartition() (*partition.Partition, error) {
	segment, _ := b.catalog.BrokerConfig("offsets.topic.segment.bytes")
	return b.internalPartition(group.OffsetsTopic, map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "segment.bytes": segment})
}

// startGroupCoordinator replays __consumer_offsets from log and starts
// the group coordinator on it.
func (b *Broker) startGroupCoordinator(log partition.StateLog) (*group.Coordinator, error) {
	ms := func(key string) time.Duration { return time.Duration(b.brokerInt(key)) * time.Millisecond }
	cfg := group.Config{
		MinSessionTimeout:         ms("group.min.session.timeout.ms"),
		MaxSessionTimeout:         ms("group.max.session.timeout.ms"),
		InitialRebalanceDelay:     ms("group.initial.rebalance.delay.ms"),
		MaxGroupSize:              int(b.brokerInt("group.max.size")),
		ConsumerSessionTimeout:    ms("group.consumer.session.timeout.ms"),
		ConsumerHeartbeatInterval: ms("group.consumer.heartbeat.interval.ms"),
		ConsumerMaxGroupSize:      int(b.brokerInt("group.consumer.max.size")),
		OffsetsRetention:          time.Duration(b.brokerInt("offsets.retention.minutes")) * time.Minute,
		NewID:                     newUUID,
		GenerationBase:            b.catalog.GroupGenerationsReserved(),
	}
	coord, err := group.Start(group.Options{
		ReserveGenerations:     b.catalog.ReserveGroupGenerations,
		Partition:              log,
		Topics:                 catalogTopics{b.catalog},
		Config:                 cfg,
		Logger:                 b.log.With("component", "group-coordinator"),
		RetentionCheckInterval: ms("offsets.retention.check.interval.ms"),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the group coordinator: %w", err)
	}
	return coord, nil
}

// clientHost formats the peer the way Kafka's tools show it ("/1.2.3.4").
func clientHost(r *server.Request) string {
	if r.Conn == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(r.Conn.RemoteAddr())
	if err != nil {
		host = r.Conn.RemoteAddr()
	}
	return "/" + host
}

// handleGroupRequest hands a group API request to the coordinator and
// answers from the connection's writer once the coordinator replies —
// possibly much later for JoinGroup/SyncGroup (a rebalance), or after fsync
// for commits. A broker shutting down (or a client hanging up: ctx is the
// connection's) answers parked requests COORDINATOR_NOT_AVAILABLE within
// 5 s rather than holding the connection open.
func (b *Broker) handleGroupRequest(ctx context.Context, r *server.Request) server.Reply {
	if refusal := b.refuseShareName(r.Msg); refusal != nil {
		return immediate(refusal)
	}
	client := group.Client{ID: r.Header.ClientID, Host: clientHost(r)}
	groups := b.coords().groups
	ch := groups.Submit(client, r.Msg)
	req := r.Msg
	return server.Reply{Wait: func() kmsg.Response {
		select {
		case resp := <-ch:
			return resp
		case <-groups.Done():
			return groups.Await(req, ch)
		case <-ctx.Done():
			select {
			case resp := <-ch:
				return resp
			case <-time.After(5 * time.Second):
				// Parked in a rebalance while the server stops.
				return group.ErrorResponse(req, kerr.CoordinatorNotAvailable.Code)
			}
		}
	}}
}

// Group metrics.
var (
	descGroupLag = prometheus.NewDesc("kafka_consumergroup_lag",
		"Messages between a group's committed offset and the partition's high watermark.",
		[]string{"consumergroup", "topic", "partition"}, nil)
	descGroupOffset = prometheus.NewDesc("kafka_consumergroup_current_offset",
		"A group's committed offset.", []string{"consumergroup", "topic", "partition"}, nil)
	descRebalances = prometheus.NewDesc("kafka_coordinator_group_rebalances_total",
		"Rebalances started: classic groups entering PreparingRebalance, KIP-848 groups bumping their epoch.",
		[]string{"protocol"}, nil)
)

// groupCollector reports committed offsets and lag at scrape time.
type groupCollector struct{ b *Broker }

// Describe implements prometheus.Collector.
func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descGroupLag
	ch <- descGroupOffset
	ch <- descRebalances
}

// Collect implements prometheus.Collector: offsets are read from the
// coordinator and high watermarks from the partitions at scrape time.
func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.b.hosting() {
		return
	}
	coord := c.b.coords().groups
	st := coord.Stats()
	ch <- prometheus.MustNewConstMetric(descRebalances, prometheus.CounterValue, float64(st.ClassicRebalances), "classic")
	ch <- prometheus.MustNewConstMetric(descRebalances, prometheus.CounterValue, float64(st.ConsumerEpochBumps), "consumer")
	for _, o := range coord.Committed() {
		p := c.b.partition(o.Topic, o.Partition)
		if p == nil {
			continue
		}
		idx := strconv.Itoa(int(o.Partition))
		ch <- prometheus.MustNewConstMetric(descGroupOffset, prometheus.GaugeValue, float64(o.Offset), o.Group, o.Topic, idx)
		ch <- prometheus.MustNewConstMetric(descGroupLag, prometheus.GaugeValue, float64(max(p.HighWatermark()-o.Offset, 0)), o.Group, o.Topic, idx)
	}
}
