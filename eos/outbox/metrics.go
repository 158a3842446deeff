package outbox

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptors shared by both relays; every series carries the
// relay's name and mode (poll or cdc).
var (
	labels          = []string{"relay", "mode"}
	descPublished   = prometheus.NewDesc("exactly_outbox_published_total", "Events committed to Kafka by this relay process.", labels, nil)
	descBatches     = prometheus.NewDesc("exactly_outbox_batches_total", "Kafka transactions with events committed by this relay process.", labels, nil)
	descLagRows     = prometheus.NewDesc("exactly_outbox_lag_rows", "Committed outbox rows not yet published. CDC: absent after a start until the relay has caught up with where PostgreSQL was then (see CDCRelay.LagRows).", labels, nil)
	descLagSeconds  = prometheus.NewDesc("exactly_outbox_lag_seconds", "Polling: age of the oldest committed row not yet published, from its created_at. CDC: now minus the commit time of the oldest transaction received and not yet published (see CDCRelay.LagSeconds).", labels, nil)
	descHeldRows    = prometheus.NewDesc("exactly_outbox_horizon_held_back_rows", "Committed rows the xmin horizon still holds back (polling).", labels, nil)
	descHeldSeconds = prometheus.NewDesc("exactly_outbox_horizon_held_back_seconds", "Age of the oldest committed row the horizon holds back (polling).", labels, nil)
	descHorizonXIDs = prometheus.NewDesc("exactly_outbox_horizon_xids", "Transaction ids between the horizon (snapshot xmin) and the next xid (polling).", labels, nil)
	descLagBytes    = prometheus.NewDesc("exactly_outbox_lag_bytes", "WAL bytes past the position confirmed to PostgreSQL (CDC).", labels, nil)
	descSnapDone    = prometheus.NewDesc("exactly_outbox_snapshot_rows_done", "Initial snapshot rows published (CDC).", labels, nil)
	descSnapTotal   = prometheus.NewDesc("exactly_outbox_snapshot_rows_total", "Initial snapshot rows in all; -1 while not yet counted (CDC).", labels, nil)
)

// scrapeTimeout bounds the database queries of one scrape.
const scrapeTimeout = 5 * time.Second

// relayCollector reports one relay's metrics; collect emits each value
// and the collector adds the relay and mode labels.
type relayCollector struct {
	name, mode string
	descs      []*prometheus.Desc
	collect    func(ctx context.Context, emit func(*prometheus.Desc, prometheus.ValueType, float64))
}

func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	c.collect(ctx, func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v, c.name, c.mode)
	})
}

// Collector exposes the relay's progress as Prometheus metrics (published,
// batches, lag in rows and seconds, and how far the horizon holds rows
// back). A scrape runs Stats' query; if it fails, only the counters are
// reported.
func (r *Relay) Collector() prometheus.Collector {
	return &relayCollector{name: r.cfg.Name, mode: "poll",
		descs: []*prometheus.Desc{descPublished, descBatches, descLagRows, descLagSeconds, descHeldRows, descHeldSeconds, descHorizonXIDs},
		collect: func(ctx context.Context, emit func(*prometheus.Desc, prometheus.ValueType, float64)) {
			st, err := r.Stats(ctx)
			emit(descPublished, prometheus.CounterValue, float64(st.Published))
			emit(descBatches, prometheus.CounterValue, float64(st.Batches))
			if err != nil {
				return
			}
			emit(descLagRows, prometheus.GaugeValue, float64(st.LagRows))
			emit(descLagSeconds, prometheus.GaugeValue, st.LagSeconds)
			emit(descHeldRows, prometheus.GaugeValue, float64(st.HeldBackRows))
			emit(descHeldSeconds, prometheus.GaugeValue, st.HeldBackSeconds)
			emit(descHorizonXIDs, prometheus.GaugeValue, float64(st.HorizonXIDs))
		},
	}
}

// Collector exposes the CDC relay's progress as Prometheus metrics
// (published, batches, lag in rows, WAL bytes and seconds, initial
// snapshot progress).
func (r *CDCRelay) Collector() prometheus.Collector {
	return &relayCollector{name: r.cfg.Name, mode: "cdc",
		descs: []*prometheus.Desc{descPublished, descBatches, descLagRows, descLagBytes, descLagSeconds, descSnapDone, descSnapTotal},
		collect: func(ctx context.Context, emit func(*prometheus.Desc, prometheus.ValueType, float64)) {
			emit(descPublished, prometheus.CounterValue, float64(r.published.Load()))
			emit(descBatches, prometheus.CounterValue, float64(r.batches.Load()))
			done, total := r.SnapshotProgress()
			emit(descSnapDone, prometheus.GaugeValue, float64(done))
			emit(descSnapTotal, prometheus.GaugeValue, float64(total))
			if lag, err := r.Lag(ctx); err == nil {
				emit(descLagBytes, prometheus.GaugeValue, float64(lag))
			}
			if secs, err := r.LagSeconds(ctx); err == nil {
				emit(descLagSeconds, prometheus.GaugeValue, secs)
			}
			if rows, known, err := r.LagRows(ctx); err == nil && known {
				emit(descLagRows, prometheus.GaugeValue, float64(rows))
			}
		},
	}
}
