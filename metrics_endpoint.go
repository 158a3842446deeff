package exactly

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/exactly/exactly/internal/broker"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/security"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsEndpoint is the Prometheus endpoint: plain HTTP, or HTTPS with
// metrics.ssl.keystore.location, and with metrics.basic.auth.users only
// those users, by their SCRAM passwords.
type metricsEndpoint struct {
	srv *http.Server
	ln  net.Listener
	tls *security.TLS // nil for plain HTTP
}

// metricsBasicAuthRealm names what the endpoint's basic auth protects.
const metricsBasicAuthRealm = `Basic realm="exactly metrics", charset="UTF-8"`

// startMetrics serves reg at /metrics on addr. An address without a host
// (":9308") binds loopback: exposing the endpoint beyond the machine takes
// naming the interface, e.g. 0.0.0.0:9308.
func startMetrics(addr string, static map[string]string, reg *prometheus.Registry, b *broker.Broker) (*metricsEndpoint, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %q: %w", addr, err)
	}
	if host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	m := &metricsEndpoint{}
	var handler http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if users := cluster.SplitList(static["metrics.basic.auth.users"]); len(users) > 0 {
		handler = basicAuth(handler, users, b)
	}
	if ks := static["metrics.ssl.keystore.location"]; ks != "" {
		if m.tls, err = security.NewTLS(security.TLSSettings{KeystoreType: "PEM", KeystoreLocation: ks}); err != nil {
			return nil, fmt.Errorf("metrics.ssl.keystore.location: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	if m.tls != nil {
		ln = tls.NewListener(ln, m.tls.ServerConfig())
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", handler)
	m.ln = ln
	// Bounds for an endpoint anyone who can reach it may talk to: headers
	// and a whole exchange in seconds, small headers.
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go m.srv.Serve(ln)
	return m, nil
}

// basicAuth admits requests whose basic-auth user is one of users and
// whose password matches that user's SCRAM credential. Deriving the key
// costs thousands of hash iterations, so checks run one at a time: a
// flood of guesses costs at most one core and waits its turn.
func basicAuth(next http.Handler, users []string, b *broker.Broker) http.Handler {
	admitted := make(map[string]bool, len(users))
	for _, u := range users {
		admitted[u] = true
	}
	turn := make(chan struct{}, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, password, ok := r.BasicAuth()
		if ok {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			select {
			case turn <- struct{}{}:
				ok = b.AuthenticateHTTP(r.RemoteAddr, user, password, admitted[user])
				<-turn
			case <-ctx.Done():
				cancel()
				http.Error(w, "busy checking credentials", http.StatusServiceUnavailable)
				return
			}
			cancel()
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", metricsBasicAuthRealm)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (m *metricsEndpoint) close() {
	m.srv.Close()
}
