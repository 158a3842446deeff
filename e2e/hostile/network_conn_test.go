package hostile

import (
	"fmt"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// attackConnectionFlood opens 1100 connections from 127.0.0.1 (more than
// the default max.connections.per.ip, 1024) and keeps them open; it
// returns them in the order opened. They are bare TCP connections on
// every listener: the connection limits apply at accept, before a TLS
// handshake or SASL exchange (which the broker bounds by its
// authentication deadline).
func attackConnectionFlood(t *testing.T, tg target) []*testenv.RawConn {
	t.Helper()
	conns := make([]*testenv.RawConn, 0, 1100)
	for range 1100 {
		conns = append(conns, testenv.DialRaw(t, tg.addr))
	}
	return conns
}

// TestConnectionLimits: over max.connections.per.ip or max.connections a
// new connection is closed at once; the connections within the limit are
// served, and once some close new ones are served again.
func TestConnectionLimits(t *testing.T) {
	for _, limit := range []string{"max.connections.per.ip", "max.connections"} {
		t.Run(limit, func(t *testing.T) {
			const n = 10
			b := startMetricsBroker(t, map[string]string{limit: fmt.Sprint(n)})

			conns := attackConnectionFlood(t, plaintext(b.Addr()))

			eventually(t, 10*time.Second, "every connection of the flood accepted or rejected", func() bool {
				return metric(t, b, metricConnCreated)+metric(t, b, metricRejected(limit)) == float64(len(conns))
			})
			if got := metric(t, b, metricConnCount); got != n {
				t.Fatalf("%v connections open, want %s = %d", got, limit, n)
			}
			for i, c := range conns {
				if answered := apiVersionsAnswered(c); answered != (i < n) {
					t.Fatalf("connection %d of the flood answered: %v, want %v (%s = %d)", i, answered, i < n, limit, n)
				}
			}
			for _, c := range conns[:n/2] {
				c.NC.Close()
			}
			eventually(t, 10*time.Second, "closed connections leaving the count", func() bool {
				return metric(t, b, metricConnCount) == n-n/2
			})
			for range n / 2 {
				if c := testenv.DialRaw(t, b.Addr()); !apiVersionsAnswered(c) {
					t.Fatal("a new connection within the limit was not served")
				}
			}
			for _, c := range conns {
				c.NC.Close()
			}
			canary(t, plaintext(b.Addr()), 20)
		})
	}
}
