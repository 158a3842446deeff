package clientconf

import (
	"errors"
	"fmt"
	"strings"
)

// The Java login modules whose credentials we understand.
const (
	plainModule = "org.apache.kafka.common.security.plain.PlainLoginModule"
	scramModule = "org.apache.kafka.common.security.scram.ScramLoginModule"
)

// jaasEntry is one parsed sasl.jaas.config value.
type jaasEntry struct {
	module             string
	username, password string
}

// parseJAAS reads the single login-module entry Kafka accepts in
// sasl.jaas.config:
//
//	<module> <flag> key="value" key2=value2 ... ;
//
// Values may be double-quoted (a backslash escapes the next character) or
// bare words. Options other than username and password are accepted and
// ignored, as the login modules ignore them.
func parseJAAS(s string) (jaasEntry, error) {
	toks, err := jaasTokens(s)
	if err != nil {
		return jaasEntry{}, err
	}
	if len(toks) < 3 || toks[len(toks)-1] != ";" {
		return jaasEntry{}, errors.New(`expected "<LoginModule> required username=\"...\" password=\"...\";"`)
	}
	toks = toks[:len(toks)-1]
	var e jaasEntry
	switch toks[0] {
	case plainModule, scramModule:
		e.module = toks[0]
	default:
		return jaasEntry{}, fmt.Errorf("login module %s is not supported (use %s or %s)", toks[0], plainModule, scramModule)
	}
	switch strings.ToLower(toks[1]) {
	case "required", "requisite", "sufficient", "optional":
	default:
		return jaasEntry{}, fmt.Errorf("expected a control flag (required) after the login module, got %q", toks[1])
	}
	rest := toks[2:]
	for len(rest) > 0 {
		if len(rest) < 3 || rest[1] != "=" {
			return jaasEntry{}, fmt.Errorf("expected key=value near %q", rest[0])
		}
		switch rest[0] {
		case "username":
			e.username = rest[2]
		case "password":
			e.password = rest[2]
		}
		rest = rest[3:]
	}
	if e.username == "" || e.password == "" {
		return jaasEntry{}, errors.New("the login module needs username and password options")
	}
	return e, nil
}

// jaasTokens splits s into words, quoted strings (unquoted), "=" and ";".
func jaasTokens(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '=' || c == ';':
			toks = append(toks, string(c))
			i++
		case c == '"':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, errors.New("unterminated quoted value")
			}
			toks = append(toks, b.String())
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r=;\"", rune(s[j])) {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}
