package clientconf

import (
	"fmt"
	"os"
	"strings"
)

// Overrides are settings given on the command line; each set field wins
// over the properties file.
type Overrides struct {
	// Bootstrap replaces the file's bootstrap.servers when non-empty.
	Bootstrap []string
	// TLS, when non-nil, switches TLS on or off (--tls, --tls=false).
	TLS *bool
	// CAFile, CertFile, KeyFile, ServerName, Mechanism and User replace
	// the file's values when non-empty; any TLS file also turns TLS on.
	CAFile, CertFile, KeyFile, ServerName string
	Mechanism, User                       string
	// PasswordFile names a file whose content (without trailing newline)
	// is the password.
	PasswordFile string
}

// Resolve combines a properties file (configPath, may be empty), the
// command-line overrides and the PasswordEnv environment variable.
// Precedence: flags, then the environment (for the password only), then
// the file.
func Resolve(configPath string, o Overrides) (Settings, error) {
	var s Settings
	if configPath != "" {
		var err error
		if s, err = LoadProperties(configPath); err != nil {
			return Settings{}, err
		}
	}
	if len(o.Bootstrap) > 0 {
		s.Bootstrap = o.Bootstrap
	}
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" || o.ServerName != "" {
		s.TLS = true
	}
	if o.TLS != nil {
		s.TLS = *o.TLS
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&s.CAFile, o.CAFile)
	set(&s.ServerName, o.ServerName)
	if o.CertFile != "" || o.KeyFile != "" {
		// A pair is replaced as a pair: half of the file's keystore with
		// half of the flags' is never what was meant.
		s.CertFile, s.KeyFile = o.CertFile, o.KeyFile
	}
	if o.Mechanism != "" {
		m, err := NormalizeMechanism(o.Mechanism)
		if err != nil {
			return Settings{}, fmt.Errorf("--sasl-mechanism: %w", err)
		}
		s.Mechanism = m
	}
	set(&s.User, o.User)
	switch {
	case o.PasswordFile != "":
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return Settings{}, fmt.Errorf("--sasl-password-file: %w", err)
		}
		s.Password = strings.TrimRight(string(b), "\r\n")
		if s.Password == "" {
			return Settings{}, fmt.Errorf("--sasl-password-file %s is empty", o.PasswordFile)
		}
	case os.Getenv(PasswordEnv) != "" && s.Mechanism != "":
		s.Password = os.Getenv(PasswordEnv)
	}
	return s, s.Validate()
}
