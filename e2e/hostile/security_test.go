package hostile

import (
	"crypto/tls"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAbandonedAuthenticationsAreBounded: connections that open a TLS
// handshake or SASL exchange and never finish it — silent after accept,
// half a ClientHello, a SaslHandshake and nothing more, a legacy token
// that claims more than sasl.server.max.receive.size — are all closed by
// the authentication deadline (socket.request.read.timeout.ms from
// accept), giving back their goroutines, and hold little memory
// meanwhile; a well-behaved client is served throughout.
func TestAbandonedAuthenticationsAreBounded(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, err := exactly.Start(exactly.Options{DataDir: t.TempDir(), MetricsListen: "127.0.0.1:0", Config: map[string]string{
		"listeners":                      "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
		"ssl.keystore.location":          certs.ServerFile,
		"socket.request.read.timeout.ms": "1500",
		"sasl.enabled.mechanisms":        "PLAIN,SCRAM-SHA-256",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	goroutinesBefore := runtime.NumGoroutine()
	heapBefore := heapInUse()

	const each = 150
	var conns []*testenv.RawConn
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "PLAIN"
	for range each {
		// Silent on the TLS listener: the handshake never starts.
		conns = append(conns, testenv.DialRaw(t, b.ListenerAddr("SASL_SSL")))
		// Half a TLS record header: the handshake starts and stalls.
		c := testenv.DialRaw(t, b.ListenerAddr("SASL_SSL"))
		c.Send([]byte{0x16, 0x03, 0x01, 0x02})
		conns = append(conns, c)
		// SaslHandshake v1, then nothing.
		c = testenv.DialRaw(t, b.ListenerAddr("SASL_PLAINTEXT"))
		c.Send(testenv.Frame(hs, 1, 1))
		c.ReadFrame()
		conns = append(conns, c)
		// Legacy framing claiming a 100 MiB token: refused at once.
		c = testenv.DialRaw(t, b.ListenerAddr("SASL_PLAINTEXT"))
		c.Send(testenv.Frame(hs, 0, 1))
		c.ReadFrame()
		c.SendExpectingClose(binary.BigEndian.AppendUint32(nil, 100<<20))
		conns = append(conns, c)
	}
	if grew := heapInUse() - min(heapInUse(), heapBefore); grew > 64<<20 {
		t.Errorf("heap grew by %d MiB with %d connections authenticating", grew>>20, len(conns))
	}
	canary(t, plaintext(b.Addr()), 10)

	eventually(t, 20*time.Second, "every unauthenticated connection closed by the deadline", func() bool {
		return metric(t, b, metricConnCount) == 0
	})
	for _, c := range conns {
		c.ExpectClosed()
	}
	eventually(t, 10*time.Second, "goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= goroutinesBefore+10
	})
	// A TLS client that does finish is still served.
	tc := testenv.DialRawTLS(t, b.ListenerAddr("SASL_SSL"), &tls.Config{RootCAs: certs.ClientConfig().RootCAs, ServerName: "localhost"})
	if r := tc.Request(kmsg.NewPtrApiVersionsRequest(), 3).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 {
		t.Fatalf("ApiVersions over TLS after the attack: %d", r.ErrorCode)
	}
	canary(t, plaintext(b.Addr()), 10)
}
