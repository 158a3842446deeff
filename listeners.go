package exactly

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/broker"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/server"
)

// openListeners listens on every entry of `listeners` (or on Options.Listen,
// its one-PLAINTEXT-listener shorthand).
func openListeners(opts Options, static map[string]string) ([]server.Listener, error) {
	protos, err := protocolMap(static)
	if err != nil {
		return nil, err
	}
	var specs []security.Listener
	switch {
	case opts.Listen != "" && static["listeners"] != "":
		return nil, fmt.Errorf("listen address %q and listeners=%q both given: use one", opts.Listen, static["listeners"])
	case static["listeners"] != "":
		if specs, err = security.ParseListeners("listeners", static["listeners"], protos); err != nil {
			return nil, err
		}
	default:
		listen := opts.Listen
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		specs = []security.Listener{{Name: string(security.Plaintext), Protocol: security.Plaintext}}
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", listen, err)
		}
		specs[0].Host = host
		if specs[0].Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("listen address %q: bad port", listen)
		}
	}
	var out []server.Listener
	for _, s := range specs {
		ln, err := net.Listen("tcp", s.Addr())
		if err != nil {
			for _, l := range out {
				l.Net.Close()
			}
			return nil, fmt.Errorf("listening on %s (listener %s): %w", s.Addr(), s.Name, err)
		}
		out = append(out, server.Listener{Name: s.Name, Protocol: s.Protocol, Net: ln})
	}
	return out, nil
}

// protocolMap is listener.security.protocol.map, in which the controller
// listeners of a cluster (controller.listener.names) are PLAINTEXT unless
// it names them, as in Kafka.
func protocolMap(static map[string]string) (map[string]security.Protocol, error) {
	protos, err := security.ParseProtocolMap(static["listener.security.protocol.map"])
	if err != nil {
		return nil, err
	}
	if static["controller.quorum.voters"] != "" {
		for _, name := range controllerListenerNames(static) {
			if _, ok := protos[name]; !ok {
				protos[name] = security.Plaintext
			}
		}
	}
	return protos, nil
}

// controllerListenerNames is controller.listener.names (default
// CONTROLLER), upper case.
func controllerListenerNames(static map[string]string) []string {
	v, ok := static["controller.listener.names"]
	if !ok {
		v = "CONTROLLER"
	}
	var out []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.ToUpper(strings.TrimSpace(n)); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// advertisedListeners is the address each listener's clients are told:
// its entry in advertised.listeners, else Options.Advertise for the first
// listener, else the address it listens on.
func advertisedListeners(opts Options, static map[string]string, lns []server.Listener) (map[string]broker.Endpoint, error) {
	given := map[string]string{}
	if v := static["advertised.listeners"]; v != "" {
		protos, err := protocolMap(static)
		if err != nil {
			return nil, err
		}
		specs, err := security.ParseListeners("advertised.listeners", v, protos)
		if err != nil {
			return nil, err
		}
		for _, s := range specs {
			given[s.Name] = s.Addr()
		}
	}
	out := map[string]broker.Endpoint{}
	for i, l := range lns {
		addr, ok := given[l.Name]
		delete(given, l.Name)
		if !ok && i == 0 && opts.Advertise != "" {
			addr, ok = opts.Advertise, true
		}
		if !ok {
			addr = l.Net.Addr().String()
		}
		host, portStr, err := net.SplitHostPort(addr)
		port, perr := strconv.Atoi(portStr)
		if err != nil || perr != nil || port <= 0 || port > 65535 {
			return nil, fmt.Errorf("advertised address %q of listener %s is not host:port", addr, l.Name)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			return nil, fmt.Errorf("advertised address %q of listener %s must name a host clients can reach (advertised.listeners or --advertise)", addr, l.Name)
		}
		out[l.Name] = broker.Endpoint{Host: host, Port: int32(port)}
	}
	for name := range given {
		return nil, fmt.Errorf("advertised.listeners names listener %s, which listeners does not", name)
	}
	return out, nil
}

// loadTLS loads the ssl.* material when a listener needs it and attaches
// it to every TLS listener (one certificate for all; Kafka's per-listener
// listener.name.<name>.ssl.* keys are not supported).
func loadTLS(static map[string]string, lns []server.Listener) (*security.TLS, error) {
	need := false
	for _, l := range lns {
		need = need || l.Protocol.TLS()
	}
	if !need {
		return nil, nil
	}
	t, err := security.NewTLS(security.TLSSettings{
		KeystoreType: static["ssl.keystore.type"], KeystoreLocation: static["ssl.keystore.location"],
		TruststoreType: static["ssl.truststore.type"], TruststoreLocation: static["ssl.truststore.location"],
		ClientAuth: static["ssl.client.auth"], PrincipalRules: static["ssl.principal.mapping.rules"],
	})
	if err != nil {
		return nil, err
	}
	for i := range lns {
		if lns[i].Protocol.TLS() {
			lns[i].TLS = t
		}
	}
	return t, nil
}

// resolveConnectionOverrides turns max.connections.per.ip.overrides into
// limits by IP address. Host names are resolved once, at start, to every
// address they have (as Kafka does); one that does not resolve stops the
// start, so a misspelt name cannot silently leave its host unlimited.
func resolveConnectionOverrides(v string) (map[string]int, error) {
	byHost, err := cluster.ParseConnectionOverrides(v)
	if err != nil || len(byHost) == 0 {
		return nil, err
	}
	out := map[string]int{}
	for host, n := range byHost {
		if a, err := netip.ParseAddr(host); err == nil {
			out[a.Unmap().String()] = n
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("max.connections.per.ip.overrides: %s: %w", host, err)
		}
		for _, a := range addrs {
			out[a.Unmap().String()] = n
		}
	}
	return out, nil
}
