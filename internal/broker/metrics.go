package broker

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metrics holds the broker's Prometheus series, named after Kafka's JMX
// beans (kafka.server BrokerTopicMetrics, kafka.network RequestMetrics,
// kafka.log Log) so existing dashboards translate directly.
type metrics struct {
	messagesIn *prometheus.CounterVec
	bytesIn    *prometheus.CounterVec
	bytesOut   *prometheus.CounterVec
	requests   *prometheus.CounterVec
	reqErrors  *prometheus.CounterVec
	reqTime    *prometheus.HistogramVec
	// producersExpired counts producer ids partitions forgot: idle past
	// producer.id.expiration.ms, or evicted for a new producer when full.
	producersExpired prometheus.Counter
}

func newMetrics(b *Broker, reg prometheus.Registerer) *metrics {
	m := &metrics{
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_brokertopicmetrics_messages_in_total", Help: "Records appended, per topic.",
		}, []string{"topic"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_brokertopicmetrics_bytes_in_total", Help: "Record batch bytes appended, per topic.",
		}, []string{"topic"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_brokertopicmetrics_bytes_out_total", Help: "Record batch bytes returned by fetches, per topic.",
		}, []string{"topic"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_network_requestmetrics_requests_total", Help: "Requests served, per API.",
		}, []string{"request"}),
		reqErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_network_requestmetrics_errors_total", Help: "Error codes returned, per API and error.",
		}, []string{"request", "error"}),
		reqTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kafka_network_requestmetrics_total_time_seconds", Help: "Time from request read to response ready, per API.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"request"}),
		producersExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_log_producer_ids_expired_total",
			Help: "Producer ids forgotten by partitions: idle past producer.id.expiration.ms, or evicted for a new producer when a partition held producer.id.max.per.partition.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.messagesIn, m.bytesIn, m.bytesOut, m.requests, m.reqErrors, m.reqTime, m.producersExpired, &logCollector{b: b})
	}
	return m
}

// ObserveRequest implements server.Observer.
func (m *metrics) ObserveRequest(key int16, d time.Duration, failed bool) {
	name := kmsg.NameForKey(key)
	m.requests.WithLabelValues(name).Inc()
	m.reqTime.WithLabelValues(name).Observe(d.Seconds())
	if failed {
		m.reqErrors.WithLabelValues(name, "INVALID_REQUEST").Inc()
	}
}

// countError records an error code returned inside a response.
func (m *metrics) countError(key int16, code int16) {
	if code == 0 {
		return
	}
	m.reqErrors.WithLabelValues(kmsg.NameForKey(key), errorName(code)).Inc()
}

func (m *metrics) forgetTopic(topic string) {
	m.messagesIn.DeleteLabelValues(topic)
	m.bytesIn.DeleteLabelValues(topic)
	m.bytesOut.DeleteLabelValues(topic)
}

// Observer returns the request observer for the server.
func (b *Broker) Observer() interface {
	ObserveRequest(key int16, d time.Duration, failed bool)
} {
	return b.metrics
}

// logCollector reports per-partition log gauges at scrape time, so the hot
// path updates nothing for them.
type logCollector struct{ b *Broker }

var (
	descLEO      = prometheus.NewDesc("kafka_log_log_end_offset", "Log end offset.", []string{"topic", "partition"}, nil)
	descLogStart = prometheus.NewDesc("kafka_log_log_start_offset", "Log start offset.", []string{"topic", "partition"}, nil)
	// HW minus the last stable offset is what read_committed readers
	// cannot see yet: growing, it shows a transaction left open.
	descLastStable = prometheus.NewDesc("kafka_log_last_stable_offset", "Last stable offset (read_committed readers see below it).", []string{"topic", "partition"}, nil)
	descHW         = prometheus.NewDesc("kafka_cluster_partition_high_watermark", "High watermark (durable, visible offset).", []string{"topic", "partition"}, nil)
	descSegments   = prometheus.NewDesc("kafka_log_log_num_log_segments", "Number of log segments.", []string{"topic", "partition"}, nil)
	descSize       = prometheus.NewDesc("kafka_log_log_size_bytes", "Bytes on disk in the partition's segments.", []string{"topic", "partition"}, nil)
)

func (c *logCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLEO, descLogStart, descLastStable, descHW, descSegments, descSize} {
		ch <- d
	}
}

func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	c.b.partsMu.RLock()
	defer c.b.partsMu.RUnlock()
	for topic, ps := range c.b.parts {
		for _, p := range ps {
			idx := strconv.Itoa(int(p.Index))
			ch <- prometheus.MustNewConstMetric(descLEO, prometheus.GaugeValue, float64(p.LogEndOffset()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descLogStart, prometheus.GaugeValue, float64(p.LogStartOffset()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descLastStable, prometheus.GaugeValue, float64(p.LastStableOffset()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descHW, prometheus.GaugeValue, float64(p.HighWatermark()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descSegments, prometheus.GaugeValue, float64(len(p.Log().Segments())), topic, idx)
			ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(p.Log().Size()), topic, idx)
		}
	}
}
