package broker

// Metrics of a cluster node: the metadata quorum (names after Kafka's
// kafka.server:type=raft-metrics) and the fenced brokers.

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descRaftTerm = prometheus.NewDesc("kafka_server_raft_metrics_current_epoch",
		"The metadata quorum's current term (Kafka's leader epoch).", nil, nil)
	descRaftLeader = prometheus.NewDesc("kafka_server_raft_metrics_current_leader",
		"The metadata quorum's leader (the controller), -1 while there is none.", nil, nil)
	descRaftCommit = prometheus.NewDesc("kafka_server_raft_metrics_high_watermark",
		"The highest metadata log index known committed.", nil, nil)
	descRaftApplied = prometheus.NewDesc("exactly_metadata_applied_index",
		"The highest metadata log index applied on this node.", nil, nil)
	descRaftApplyLag = prometheus.NewDesc("exactly_metadata_apply_lag",
		"Committed metadata log entries not yet applied on this node.", nil, nil)
	descRaftLeaderChanges = prometheus.NewDesc("exactly_metadata_leader_changes_total",
		"Leaders this node has seen since it started.", nil, nil)
	descRaftVoterLag = prometheus.NewDesc("exactly_metadata_voter_lag",
		"Entries a voter is behind the leader's log (reported by the leader only).", []string{"voter"}, nil)
	descFencedBrokers = prometheus.NewDesc("kafka_controller_fenced_broker_count",
		"Registered brokers that are fenced (lead nothing).", nil, nil)
)

// clusterCollector reports the quorum's state at scrape time.
type clusterCollector struct{ b *Broker }

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftTerm, descRaftLeader, descRaftCommit, descRaftApplied,
		descRaftApplyLag, descRaftLeaderChanges, descRaftVoterLag, descFencedBrokers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.node.quorum.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descRaftTerm, float64(st.Term))
	gauge(descRaftLeader, float64(c.b.controllerID()))
	gauge(descRaftCommit, float64(st.Commit))
	gauge(descRaftApplied, float64(st.Applied))
	gauge(descRaftApplyLag, float64(st.Commit-min(st.Applied, st.Commit)))
	ch <- prometheus.MustNewConstMetric(descRaftLeaderChanges, prometheus.CounterValue, float64(st.LeaderChanges))
	if st.Leader == st.NodeID {
		for _, v := range st.Voters {
			gauge(descRaftVoterLag, float64(v.Lag), strconv.FormatUint(v.ID, 10))
		}
	}
	fenced := 0
	for _, br := range c.b.catalog.Brokers() {
		if br.Fenced {
			fenced++
		}
	}
	gauge(descFencedBrokers, float64(fenced))
}
