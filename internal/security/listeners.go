// Package security holds the broker's security pieces that do not touch a
// socket: Kafka's listener and security-protocol configuration, TLS
// material loaded from PEM files (reloadable), the mapping of a client
// certificate's subject to a principal, and the SASL mechanisms' message
// parsing and credential checks (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
//
// internal/server applies them to connections; internal/broker owns the
// credential store they check against.
package security

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Protocol is a Kafka security protocol.
type Protocol string

// Kafka's security protocols.
const (
	Plaintext     Protocol = "PLAINTEXT"
	SSL           Protocol = "SSL"
	SASLPlaintext Protocol = "SASL_PLAINTEXT"
	SASLSSL       Protocol = "SASL_SSL"
)

// TLS reports whether the protocol runs over TLS.
func (p Protocol) TLS() bool { return p == SSL || p == SASLSSL }

// SASL reports whether connections must authenticate with SASL.
func (p Protocol) SASL() bool { return p == SASLPlaintext || p == SASLSSL }

// DefaultProtocolMap is Kafka's default listener.security.protocol.map:
// each protocol's name is also a listener name.
const DefaultProtocolMap = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"

// Listener is one entry of `listeners` (or `advertised.listeners`).
type Listener struct {
	// Name is the listener name (the part before "://"), upper case.
	Name     string
	Protocol Protocol
	// Host may be empty (all interfaces, as in Kafka's "PLAINTEXT://:9092").
	Host string
	Port int
}

// Addr is the listener's host:port.
func (l Listener) Addr() string { return net.JoinHostPort(l.Host, strconv.Itoa(l.Port)) }

// ParseProtocolMap parses listener.security.protocol.map
// ("NAME:PROTOCOL,..."); empty means DefaultProtocolMap.
func ParseProtocolMap(v string) (map[string]Protocol, error) {
	if strings.TrimSpace(v) == "" {
		v = DefaultProtocolMap
	}
	m := map[string]Protocol{}
	for _, e := range strings.Split(v, ",") {
		name, proto, ok := strings.Cut(strings.TrimSpace(e), ":")
		name = strings.ToUpper(strings.TrimSpace(name))
		p := Protocol(strings.ToUpper(strings.TrimSpace(proto)))
		if !ok || name == "" {
			return nil, fmt.Errorf("listener.security.protocol.map entry %q: want NAME:PROTOCOL", e)
		}
		switch p {
		case Plaintext, SSL, SASLPlaintext, SASLSSL:
		default:
			return nil, fmt.Errorf("listener.security.protocol.map entry %q: unknown security protocol %q (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)", e, proto)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("listener.security.protocol.map names listener %s twice", name)
		}
		m[name] = p
	}
	return m, nil
}

// ParseListeners parses a `listeners` or `advertised.listeners` value
// ("NAME://host:port,..."), resolving each name's protocol in protoMap.
// Names and ports must be unique, as Kafka requires.
func ParseListeners(key, v string, protoMap map[string]Protocol) ([]Listener, error) {
	var out []Listener
	seen := map[string]bool{}
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, hostport, ok := strings.Cut(e, "://")
		name = strings.ToUpper(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("%s entry %q: want NAME://host:port", key, e)
		}
		host, portStr, err := net.SplitHostPort(hostport)
		if err != nil {
			return nil, fmt.Errorf("%s entry %q: %v", key, e, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("%s entry %q: bad port %q", key, e, portStr)
		}
		p, ok := protoMap[name]
		if !ok {
			return nil, fmt.Errorf("%s entry %q: listener name %s is not in listener.security.protocol.map", key, e, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s names listener %s twice", key, name)
		}
		seen[name] = true
		out = append(out, Listener{Name: name, Protocol: p, Host: host, Port: port})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s %q names no listener", key, v)
	}
	return out, nil
}
