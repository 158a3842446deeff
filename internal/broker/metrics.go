package broker

import (
	"reflect"
	"strconv"
	"time"

	"github.com/exactly/exactly/internal/quota"
	"github.com/exactly/exactly/internal/server"
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
	// throttledReqs and throttleTime are per quota type (Produce, Fetch,
	// Request), never per client: client ids are chosen by clients.
	throttledReqs *prometheus.CounterVec
	throttleTime  *prometheus.HistogramVec
	// Connections and request memory, after Kafka's socket-server-metrics
	// (connection-count, connection-creation-total, connection-close-total)
	// and SocketServer MemoryPoolUsed.
	connCount    prometheus.Gauge
	connCreated  prometheus.Counter
	connClosed   prometheus.Counter
	connRejected *prometheus.CounterVec
	requestBytes prometheus.Gauge
	// producersExpired counts producer ids partitions forgot: idle past
	// producer.id.expiration.ms, or evicted for a new producer when full.
	producersExpired prometheus.Counter
	// authFailures and authSuccesses count authentications per
	// mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, SSL, other).
	authFailures  *prometheus.CounterVec
	authSuccesses *prometheus.CounterVec
	// authzDenials counts authorization denials per operation (authz.go).
	authzDenials *prometheus.CounterVec
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
		throttledReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_quota_throttled_requests_total", Help: "Requests answered with a throttle time, per quota type that set it.",
		}, []string{"quota_type"}),
		throttleTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kafka_server_quota_throttle_time_seconds", Help: "Throttle times given to clients, per quota type.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"quota_type"}),
		connCount: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kafka_server_socket_server_metrics_connection_count", Help: "Open client connections.",
		}),
		connCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_server_socket_server_metrics_connection_creation_total", Help: "Client connections accepted.",
		}),
		connClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_server_socket_server_metrics_connection_close_total", Help: "Accepted client connections since closed.",
		}),
		connRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_socket_server_metrics_connection_rejected_total",
			Help: "Client connections closed at accept, per limit (max.connections, max.connections.per.ip).",
		}, []string{"reason"}),
		requestBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kafka_network_socketserver_memory_pool_used_bytes",
			Help: "Request bytes in flight: read or being read and not yet released by their handler (bounded by queued.max.request.bytes).",
		}),
		producersExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_log_producer_ids_expired_total",
			Help: "Producer ids forgotten by partitions: idle past producer.id.expiration.ms, or evicted for a new producer when a partition held producer.id.max.per.partition.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_authentication_failures_total",
			Help: "Failed authentications (SASL exchanges, TLS handshakes), per mechanism.",
		}, []string{"mechanism"}),
		authSuccesses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_authentication_successes_total",
			Help: "Successful authentications (SASL exchanges, TLS client certificates), per mechanism.",
		}, []string{"mechanism"}),
		authzDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kafka_server_authorization_denials_total",
			Help: "Requests (or parts of them) refused by the authorizer, per ACL operation.",
		}, []string{"operation"}),
	}
	if reg != nil {
		reg.MustRegister(m.authFailures, m.authSuccesses, m.authzDenials)
		reg.MustRegister(m.messagesIn, m.bytesIn, m.bytesOut, m.requests, m.reqErrors, m.reqTime,
			m.throttledReqs, m.throttleTime,
			m.connCount, m.connCreated, m.connClosed, m.connRejected, m.requestBytes, m.producersExpired, &logCollector{b: b},
			b.cleaner.runs, b.cleaner.bytesRead, b.cleaner.bytesWritten)
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

// ObserveConnection implements server.Observer.
func (m *metrics) ObserveConnection(ev server.ConnEvent) {
	switch ev {
	case server.ConnAccepted:
		m.connCreated.Inc()
		m.connCount.Inc()
	case server.ConnClosed:
		m.connClosed.Inc()
		m.connCount.Dec()
	default:
		m.connRejected.WithLabelValues(ev.String()).Inc()
	}
}

// ObserveRequestBytes implements server.Observer.
func (m *metrics) ObserveRequestBytes(delta int64) { m.requestBytes.Add(float64(delta)) }

// countErrors records every error code in a response of API key: the
// one place errors are counted, so every API (groups included) shows in
// kafka_network_requestmetrics_errors_total without its handler's help.
func (m *metrics) countErrors(key int16, resp kmsg.Response) {
	if resp == nil {
		return
	}
	eachErrorCode(reflect.ValueOf(resp), func(code int16) {
		if code != 0 {
			m.reqErrors.WithLabelValues(kmsg.NameForKey(key), errorName(code)).Inc()
		}
	})
}

// eachErrorCode calls fn with every ErrorCode field in v, at any depth
// (kmsg responses put one per response, topic, partition, member, ...).
// Byte slices (record batches) and other leaves are not entered.
func eachErrorCode(v reflect.Value, fn func(int16)) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			eachErrorCode(v.Elem(), fn)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			switch {
			case f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16:
				fn(int16(v.Field(i).Int()))
			case f.Type.Kind() == reflect.Slice, f.Type.Kind() == reflect.Struct, f.Type.Kind() == reflect.Pointer:
				if f.IsExported() {
					eachErrorCode(v.Field(i), fn)
				}
			}
		}
	case reflect.Slice:
		if k := v.Type().Elem().Kind(); k != reflect.Struct && k != reflect.Pointer {
			return
		}
		for i := range v.Len() {
			eachErrorCode(v.Index(i), fn)
		}
	}
}

// throttled records one throttled request.
func (m *metrics) throttled(t quota.Type, d time.Duration) {
	m.throttledReqs.WithLabelValues(t.String()).Inc()
	m.throttleTime.WithLabelValues(t.String()).Observe(d.Seconds())
}

func (m *metrics) forgetTopic(topic string) {
	m.messagesIn.DeleteLabelValues(topic)
	m.bytesIn.DeleteLabelValues(topic)
	m.bytesOut.DeleteLabelValues(topic)
}

// Observer returns the request observer for the server.
func (b *Broker) Observer() server.Observer {
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
	descDirtyRatio = prometheus.NewDesc("kafka_log_cleaner_dirty_ratio", "Dirty bytes over cleanable bytes of a compacted partition, as the log cleaner last computed it.", []string{"topic", "partition"}, nil)
	descOffline    = prometheus.NewDesc("kafka_controller_offline_partitions_count", "Partitions offline after a storage error or corruption (KAFKA_STORAGE_ERROR).", nil, nil)
)

func (c *logCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLEO, descLogStart, descLastStable, descHW, descSegments, descSize, descDirtyRatio, descOffline} {
		ch <- d
	}
}

func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	c.b.partsMu.RLock()
	defer c.b.partsMu.RUnlock()
	offline := 0
	defer func() { ch <- prometheus.MustNewConstMetric(descOffline, prometheus.GaugeValue, float64(offline)) }()
	for topic, ps := range c.b.parts {
		for _, p := range ps {
			if p == nil {
				continue // held by another node
			}
			if p.Err() != nil {
				offline++
			}
			idx := strconv.Itoa(int(p.Index))
			ch <- prometheus.MustNewConstMetric(descLEO, prometheus.GaugeValue, float64(p.LogEndOffset()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descLogStart, prometheus.GaugeValue, float64(p.LogStartOffset()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descLastStable, prometheus.GaugeValue, float64(p.LastStableOffset()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descHW, prometheus.GaugeValue, float64(p.HighWatermark()), topic, idx)
			ch <- prometheus.MustNewConstMetric(descSegments, prometheus.GaugeValue, float64(len(p.Log().Segments())), topic, idx)
			ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(p.Log().Size()), topic, idx)
			if r, ok := c.b.cleaner.dirtyRatio(p); ok {
				ch <- prometheus.MustNewConstMetric(descDirtyRatio, prometheus.GaugeValue, r, topic, idx)
			}
		}
	}
}
