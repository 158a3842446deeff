package clientconf

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/exactly/exactly/internal/cluster"
)

// Keys the properties file accepts and applies. librdkafka's and the Java
// client's names for the same setting both appear.
var appliedKeys = []string{
	"bootstrap.servers", "client.id", "security.protocol",
	"sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password", "sasl.jaas.config",
	"ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
	"ssl.truststore.location", "ssl.truststore.type",
	"ssl.keystore.location", "ssl.keystore.type",
	"ssl.endpoint.identification.algorithm",
}

// ignoredKeys are accepted and ignored: they tune what has no equivalent
// here (JKS store passwords are meaningless for PEM files; TLS 1.2+ is
// always negotiated) and appear in most Java command-config files, so
// refusing them would only make users edit working files.
var ignoredKeys = map[string]bool{
	"ssl.truststore.password": true, "ssl.keystore.password": true,
	"ssl.protocol": true, "ssl.enabled.protocols": true, "client.dns.lookup": true,
}

// LoadProperties reads a client properties file (see ParseProperties).
func LoadProperties(path string) (Settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return Settings{}, fmt.Errorf("--command-config: %w", err)
	}
	defer f.Close()
	props, err := cluster.ParseProperties(f)
	if err != nil {
		return Settings{}, fmt.Errorf("--command-config %s: %w", path, err)
	}
	s, err := FromProperties(props)
	if err != nil {
		return Settings{}, fmt.Errorf("--command-config %s: %w", path, err)
	}
	return s, nil
}

// FromProperties maps client properties to Settings. Relative file paths
// stay relative to the working directory, as with every Kafka tool.
//
// Without security.protocol, the protocol follows the keys given: TLS when
// any ssl.* file is named, SASL when a mechanism or credentials are.
// Unknown keys are an error, so that a misspelt key cannot silently
// downgrade a connection to plaintext.
func FromProperties(props map[string]string) (Settings, error) {
	var s Settings
	for k := range props {
		if !ignoredKeys[k] && !contains(appliedKeys, k) {
			return Settings{}, fmt.Errorf("unknown key %q (accepted: %s)", k, strings.Join(sortedCopy(appliedKeys), ", "))
		}
	}
	get := func(k string) string { return strings.TrimSpace(props[k]) }

	if v := get("bootstrap.servers"); v != "" {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				s.Bootstrap = append(s.Bootstrap, a)
			}
		}
	}
	s.ClientID = get("client.id")

	// SASL: mechanism, then credentials from the plain keys or JAAS.
	mech, mechs := get("sasl.mechanism"), get("sasl.mechanisms")
	if mech != "" && mechs != "" && !strings.EqualFold(mech, mechs) {
		return Settings{}, fmt.Errorf("sasl.mechanism=%s and sasl.mechanisms=%s disagree", mech, mechs)
	}
	if mech == "" {
		mech = mechs
	}
	if mech != "" {
		m, err := NormalizeMechanism(mech)
		if err != nil {
			return Settings{}, fmt.Errorf("sasl.mechanism: %w", err)
		}
		s.Mechanism = m
	}
	s.User, s.Password = props["sasl.username"], props["sasl.password"]
	if jaas := get("sasl.jaas.config"); jaas != "" {
		if s.User != "" || s.Password != "" {
			return Settings{}, fmt.Errorf("give the credentials once: sasl.jaas.config or sasl.username/sasl.password")
		}
		j, err := parseJAAS(jaas)
		if err != nil {
			return Settings{}, fmt.Errorf("sasl.jaas.config: %w", err)
		}
		switch {
		case j.module == plainModule && s.Mechanism == "":
			s.Mechanism = Plain
		case j.module == plainModule && s.Mechanism != Plain,
			j.module == scramModule && s.Mechanism != ScramSHA256 && s.Mechanism != ScramSHA512:
			want := "SCRAM-SHA-256 or SCRAM-SHA-512"
			if j.module == plainModule {
				want = Plain
			}
			got := s.Mechanism
			if got == "" {
				got = "unset"
			}
			return Settings{}, fmt.Errorf("sasl.jaas.config uses %s, which needs sasl.mechanism=%s (it is %s)", j.module, want, got)
		}
		s.User, s.Password = j.username, j.password
	}

	// TLS files: librdkafka's locations or Java's PEM stores.
	s.CAFile = get("ssl.ca.location")
	s.CertFile, s.KeyFile = get("ssl.certificate.location"), get("ssl.key.location")
	if ts := get("ssl.truststore.location"); ts != "" {
		if t := get("ssl.truststore.type"); !strings.EqualFold(t, "PEM") {
			return Settings{}, fmt.Errorf("ssl.truststore.location needs ssl.truststore.type=PEM (it is %q; convert JKS/PKCS12 stores to PEM)", t)
		}
		if s.CAFile != "" {
			return Settings{}, fmt.Errorf("give the CA once: ssl.ca.location or ssl.truststore.location")
		}
		s.CAFile = ts
	}
	if ks := get("ssl.keystore.location"); ks != "" {
		if t := get("ssl.keystore.type"); !strings.EqualFold(t, "PEM") {
			return Settings{}, fmt.Errorf("ssl.keystore.location needs ssl.keystore.type=PEM (it is %q; convert JKS/PKCS12 stores to PEM)", t)
		}
		if s.CertFile != "" || s.KeyFile != "" {
			return Settings{}, fmt.Errorf("give the client certificate once: ssl.keystore.location or ssl.certificate.location/ssl.key.location")
		}
		// A KIP-651 PEM keystore holds the chain and the key in one file.
		s.CertFile, s.KeyFile = ks, ks
	}
	switch v := strings.ToLower(get("ssl.endpoint.identification.algorithm")); v {
	case "", "https":
	case "none":
		s.SkipHostnameCheck = true
	default:
		return Settings{}, fmt.Errorf("ssl.endpoint.identification.algorithm=%s: use https or none", v)
	}
	if _, ok := props["ssl.endpoint.identification.algorithm"]; ok && get("ssl.endpoint.identification.algorithm") == "" {
		// Java's way of switching the check off is the empty value.
		s.SkipHostnameCheck = true
	}

	hasTLSKeys := s.CAFile != "" || s.CertFile != "" || s.SkipHostnameCheck
	hasSASLKeys := s.Mechanism != "" || s.User != "" || s.Password != ""
	switch p := strings.ToUpper(get("security.protocol")); p {
	case "":
		s.TLS = hasTLSKeys
	case "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
		s.TLS = p == "SSL" || p == "SASL_SSL"
		wantSASL := strings.HasPrefix(p, "SASL_")
		if !s.TLS && hasTLSKeys {
			return Settings{}, fmt.Errorf("security.protocol=%s does not use TLS, but ssl.* files are set", p)
		}
		if !wantSASL && hasSASLKeys {
			return Settings{}, fmt.Errorf("security.protocol=%s does not use SASL, but sasl.* keys are set", p)
		}
		if wantSASL && s.Mechanism == "" {
			return Settings{}, fmt.Errorf("security.protocol=%s needs sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", p)
		}
	default:
		return Settings{}, fmt.Errorf("security.protocol=%s: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", p)
	}
	return s, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedCopy(list []string) []string {
	c := append([]string(nil), list...)
	sort.Strings(c)
	return c
}
