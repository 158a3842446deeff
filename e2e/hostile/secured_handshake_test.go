package hostile

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Attacks on the authentication of a SASL_SSL listener that never finish
// it: TLS handshakes and SASL exchanges left silent, half sent, or
// dribbled a byte at a time. The broker must close each at the
// authentication deadline (socket.request.read.timeout.ms from accept).

// clientHello is a real TLS ClientHello record, as the first bytes a
// client sends on a TLS listener.
var clientHello = sync.OnceValue(func() []byte {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		tls.Client(client, &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12}).Handshake()
	}()
	record := make([]byte, 5) // type, version, length
	if _, err := io.ReadFull(server, record); err != nil {
		panic(err)
	}
	record = append(record, make([]byte, binary.BigEndian.Uint16(record[3:]))...)
	if _, err := io.ReadFull(server, record[5:]); err != nil {
		panic(err)
	}
	return record
})

// dribbleEvery is how often a dribbling attacker sends its next byte.
const dribbleEvery = 100 * time.Millisecond

// dribble sends data to every one of conns a byte at a time, a byte each
// dribbleEvery, for hold (the attacks choose hold so that data is never
// all sent). A connection the broker closed is left alone.
func dribble(conns []*testenv.RawConn, data []byte, hold time.Duration) {
	closed := make([]bool, len(conns))
	for i, end := 0, time.Now().Add(hold); i < len(data) && time.Now().Before(end); i++ {
		for j, c := range conns {
			if closed[j] {
				continue
			}
			c.NC.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.NC.Write(data[i : i+1]); err != nil {
				closed[j] = true
			}
		}
		time.Sleep(dribbleEvery)
	}
}

// attackTLSHandshakes opens, each each times, TCP connections to a TLS
// listener that send nothing, that send half a ClientHello and stop, and
// that dribble a ClientHello a byte each 100 ms (its ~300 bytes would
// take 30 s), for hold. It returns the connections, left open.
func attackTLSHandshakes(t *testing.T, tg target, each int, hold time.Duration) []*testenv.RawConn {
	t.Helper()
	hello := clientHello()
	var conns, slow []*testenv.RawConn
	for range each {
		conns = append(conns, testenv.DialRaw(t, tg.addr))
		half := testenv.DialRaw(t, tg.addr)
		half.Send(hello[:len(hello)/2])
		conns = append(conns, half)
		slow = append(slow, testenv.DialRaw(t, tg.addr))
	}
	dribble(slow, hello, hold)
	return append(conns, slow...)
}

// attackSASLExchanges opens, each each times, TLS connections to a
// SASL_SSL listener that stop inside the SASL exchange: after the TLS
// handshake; after SaslHandshake v1; after the SCRAM client-first message
// (answered by the server-first); after SaslHandshake v0 and half a
// legacy token; and one that dribbles a SaslAuthenticate request a byte
// each 100 ms, for hold. Connections the broker refuses (beyond a
// connection limit: the TLS handshake fails) are counted, not fatal. It
// returns the open connections and the number refused.
func attackSASLExchanges(t *testing.T, tg target, each int, hold time.Duration) (conns []*testenv.RawConn, refused int) {
	t.Helper()
	first := kmsg.NewPtrSASLAuthenticateRequest()
	first.SASLAuthBytes = []byte("n,,n=" + tg.user.User + ",r=abandonedabandonedabandoned")
	slowFrame := testenv.Frame(first, 2, 1)
	steps := []func(c *testenv.RawConn) error{
		func(*testenv.RawConn) error { return nil },
		func(c *testenv.RawConn) error { return c.SaslHandshake("SCRAM-SHA-512", 1) },
		func(c *testenv.RawConn) error {
			if err := c.SaslHandshake("SCRAM-SHA-512", 1); err != nil {
				return err
			}
			_, err := c.SaslAuthenticate(first.SASLAuthBytes)
			return err
		},
		func(c *testenv.RawConn) error {
			if err := c.SaslHandshake("PLAIN", 0); err != nil {
				return err
			}
			_, err := c.NC.Write(append(binary.BigEndian.AppendUint32(nil, 100), "\x00half"...))
			return err
		},
		func(c *testenv.RawConn) error { return c.SaslHandshake("SCRAM-SHA-512", 1) }, // then dribbled
	}
	// attackers at once, so that many are open before the first reaches
	// the deadline even on a slow machine.
	var mu sync.Mutex
	var slow []*testenv.RawConn
	onWorkers(t, each*len(steps), func(i int) error {
		step := i % len(steps)
		c, err := testenv.DialConn(tg.addr, tg.tls)
		if err == nil {
			c.Bind(t)
			// Accepted, then closed at once, over max.connections.per.ip:
			// a TLS 1.3 client may finish its side before seeing it.
			if err = steps[step](c); err != nil {
				c.NC.Close()
			}
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			refused++
		case step == len(steps)-1:
			slow = append(slow, c)
		default:
			conns = append(conns, c)
		}
		return nil
	})
	dribble(slow, slowFrame, hold)
	return append(conns, slow...), refused
}

// unauthenticatedBounds runs attack against a SASL_SSL broker whose
// authentication deadline is 2 s (unless extra, its extra configs, says
// otherwise) and checks what every unauthenticated attack must leave:
// little heap while it runs, at most max.connections.per.ip (if extra
// sets it) connections at once, every connection closed by the broker
// once the deadline passed, goroutines and descriptors back to where
// they were, and the canary served over SASL_SSL. attack returns the
// connections it left open and how many the broker refused.
func unauthenticatedBounds(t *testing.T, extra map[string]string, attack func(tg target) ([]*testenv.RawConn, int)) (b *exactly.Broker, opened, refused int) {
	cfg := map[string]string{"socket.request.read.timeout.ms": "2000"}
	for k, v := range extra {
		cfg[k] = v
	}
	b, _, attacker, admin := startSecuredBroker(t, cfg)
	canary(t, admin, 5) // warm up: the goroutines a served broker keeps
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	base := heapInUse()
	heap := sample(heapInUse)
	peakConns := sample(func() uint64 { return uint64(metric(t, b, metricConnCount)) })
	t.Cleanup(func() { heap.end(); peakConns.end() }) // before the broker closes, should the test fail

	conns, refused := attack(attacker)

	if grew := int64(heap.end()) - int64(base); grew > 64<<20 {
		t.Errorf("heap grew by %d MiB with %d connections authenticating", grew>>20, len(conns))
	}
	eventually(t, 20*time.Second, "every unauthenticated connection closed by the deadline", func() bool {
		return metric(t, b, metricConnCount) == 0
	})
	for _, c := range conns {
		c.ExpectClosed()
	}
	closeAll(conns)
	eventually(t, 10*time.Second, "goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= goroutines+10
	})
	eventually(t, 10*time.Second, "descriptors back to where they were", func() bool {
		return openFDs(t) <= fds+10
	})
	peak := peakConns.end()
	t.Logf("%d connections left authenticating, %d refused, at most %d open at once", len(conns), refused, peak)
	if limit := extra["max.connections.per.ip"]; limit != "" && fmt.Sprint(peak) != limit {
		t.Errorf("at most %d connections open at once, want max.connections.per.ip = %s", peak, limit)
	}
	canary(t, admin, 20)
	return b, len(conns), refused
}

// TestSlowAndAbandonedTLSHandshakesAreBounded: TLS handshakes that never
// start, stop halfway or dribble are closed at the authentication
// deadline, whatever the peer is still sending, hold little meanwhile,
// and are each counted as a failed authentication.
func TestSlowAndAbandonedTLSHandshakesAreBounded(t *testing.T) {
	b, opened, _ := unauthenticatedBounds(t, nil, func(tg target) ([]*testenv.RawConn, int) {
		return attackTLSHandshakes(t, tg, 100, 3*time.Second), 0
	})
	// Each is an authentication failure the operator can see.
	if failed := metric(t, b, `kafka_server_authentication_failures_total{mechanism="SSL"}`); failed < float64(opened) {
		t.Errorf("%v TLS handshake failures counted for %d abandoned handshakes", failed, opened)
	}
}

// TestSlowAndAbandonedSASLExchangesAreBounded: SASL exchanges stopped at
// every step, or dribbled, are closed at the same deadline; more of them
// at once than max.connections.per.ip allows are refused at accept, so
// they hold at most the limit of connections, and once the deadline has
// freed them an authenticated client is served again.
func TestSlowAndAbandonedSASLExchangesAreBounded(t *testing.T) {
	const limit, each = 100, 30 // 5 kinds: 150 connections
	_, opened, refused := unauthenticatedBounds(t, map[string]string{
		"max.connections.per.ip":         fmt.Sprint(limit),
		"socket.request.read.timeout.ms": "8000", // time enough to open them all before the first is closed
	}, func(tg target) ([]*testenv.RawConn, int) {
		return attackSASLExchanges(t, tg, each, 2*time.Second)
	})
	if opened != limit || refused != 5*each-limit {
		t.Errorf("%d connections opened and %d refused, want %d and %d (max.connections.per.ip)", opened, refused, limit, 5*each-limit)
	}
}
