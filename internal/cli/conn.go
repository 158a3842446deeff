package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/exactly/exactly/clientconf"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"
)

// connFlags are the connection flags every client-side command shares:
// the bootstrap list, TLS, SASL and a client properties file. They are the
// one place a command's cluster connection is configured; newClient turns
// them into franz-go options.
type connFlags struct {
	bootstrap      string
	bootstrapFlags []*pflag.Flag // the flags that set bootstrap, for "was it given?"

	tls                               bool
	tlsFlag                           *pflag.Flag
	tlsCA, tlsCert, tlsKey, tlsServer string
	mechanism, user, passwordFile     string
	commandConfig                     string
}

// register adds --bootstrap-server/-b and the security flags to fs.
func (c *connFlags) register(fs *pflag.FlagSet) {
	addBootstrapFlag(fs, &c.bootstrap)
	c.bootstrapFlags = []*pflag.Flag{fs.Lookup("bootstrap-server")}
	c.registerSecurity(fs)
}

// registerSecurity adds the TLS, SASL and --command-config flags to fs,
// for commands whose bootstrap flags have another shape (bench, verify,
// outbox relay).
func (c *connFlags) registerSecurity(fs *pflag.FlagSet) {
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by the other --tls-* flags)")
	c.tlsFlag = fs.Lookup("tls")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of the CAs to trust (default: the system's)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate for mutual TLS (with --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tlsServer, "tls-server-name", "", "name the brokers' certificates must carry (default: the host dialed)")
	fs.StringVar(&c.mechanism, "sasl-mechanism", "", "SASL mechanism: "+strings.Join(clientconf.Mechanisms, ", "))
	fs.StringVar(&c.user, "sasl-user", "", "SASL user name")
	fs.StringVar(&c.passwordFile, "sasl-password-file", "",
		"file holding the SASL password (else the "+clientconf.PasswordEnv+" environment variable, else --command-config)")
	fs.StringVar(&c.commandConfig, "command-config", "",
		"client properties file (bootstrap.servers, security.protocol, sasl.*, ssl.*; librdkafka or Java keys); flags win over it")
}

// bootstrapGiven reports whether a bootstrap flag was on the command line.
func (c *connFlags) bootstrapGiven() bool {
	for _, f := range c.bootstrapFlags {
		if f != nil && f.Changed {
			return true
		}
	}
	return false
}

// settings resolves the flags, the environment and --command-config into
// one Settings. When no bootstrap list comes from either, the flag's value
// (its default) is used. It also points c.bootstrap at the list in use, so
// error messages name the brokers actually dialed.
func (c *connFlags) settings() (clientconf.Settings, error) {
	o := clientconf.Overrides{
		CAFile: c.tlsCA, CertFile: c.tlsCert, KeyFile: c.tlsKey, ServerName: c.tlsServer,
		Mechanism: c.mechanism, User: c.user, PasswordFile: c.passwordFile,
	}
	if c.tlsFlag != nil && c.tlsFlag.Changed {
		o.TLS = &c.tls
	}
	if c.bootstrapGiven() {
		seeds, err := seedBrokers(c.bootstrap)
		if err != nil {
			return clientconf.Settings{}, err
		}
		o.Bootstrap = seeds
	}
	s, err := clientconf.Resolve(c.commandConfig, o)
	if err != nil {
		return clientconf.Settings{}, err
	}
	if len(s.Bootstrap) == 0 && c.bootstrap != "" {
		if s.Bootstrap, err = seedBrokers(c.bootstrap); err != nil {
			return clientconf.Settings{}, err
		}
	}
	c.bootstrap = strings.Join(s.Bootstrap, ",")
	return s, nil
}

// newClient builds a franz-go client from the connection flags with the
// CLI's common options followed by opts.
func newClient(c *connFlags, opts ...kgo.Opt) (*kgo.Client, error) {
	s, err := c.settings()
	if err != nil {
		return nil, err
	}
	if len(s.Bootstrap) == 0 {
		return nil, fmt.Errorf("--bootstrap-server must name at least one host:port")
	}
	return clientFor(s, clientID, opts...)
}

// clientFor builds a client for resolved settings: id (unless the
// properties file names one), a dial timeout, TLS and SASL, then opts.
func clientFor(s clientconf.Settings, id string, opts ...kgo.Opt) (*kgo.Client, error) {
	sec, err := s.Opts()
	if err != nil {
		return nil, err
	}
	all := []kgo.Opt{kgo.ClientID(id), kgo.DialTimeout(5 * time.Second)}
	all = append(all, sec...)
	all = append(all, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return cl, nil
}
