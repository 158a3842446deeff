package security

import (
	"fmt"
	"regexp"
	"strings"
)

// PrincipalRule is one rule of ssl.principal.mapping.rules: DEFAULT (the
// subject as is) or RULE:pattern/replacement/[LU].
type PrincipalRule struct {
	def     bool
	re      *regexp.Regexp
	repl    string
	caseMod byte // 0, 'L' or 'U'
}

var javaGroupRef = regexp.MustCompile(`\$(\d+)`)

// ParsePrincipalRules parses ssl.principal.mapping.rules; empty means
// DEFAULT. Patterns must match the whole subject, as Kafka's (Java
// matches()) do; "$1" in a replacement names a group.
func ParsePrincipalRules(v string) ([]PrincipalRule, error) {
	var rules []PrincipalRule
	s := v
	for {
		s = strings.TrimLeft(s, " \t\n,")
		if s == "" {
			break
		}
		if rest, ok := strings.CutPrefix(s, "DEFAULT"); ok {
			rules = append(rules, PrincipalRule{def: true})
			s = rest
			continue
		}
		rest, ok := strings.CutPrefix(s, "RULE:")
		if !ok {
			return nil, fmt.Errorf("ssl.principal.mapping.rules %q: expected DEFAULT or RULE: at %q", v, s)
		}
		pat, rest, ok1 := cutUnescaped(rest)
		repl, rest, ok2 := cutUnescaped(rest)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("ssl.principal.mapping.rules %q: a rule is RULE:pattern/replacement/[LU]", v)
		}
		r := PrincipalRule{repl: javaGroupRef.ReplaceAllString(repl, "$${$1}")}
		if rest != "" && (rest[0] == 'L' || rest[0] == 'U') {
			r.caseMod, rest = rest[0], rest[1:]
		}
		if t := strings.TrimLeft(rest, " \t\n"); t != "" && t[0] != ',' {
			return nil, fmt.Errorf("ssl.principal.mapping.rules %q: unexpected %q after a rule", v, t)
		}
		re, err := regexp.Compile("^(?:" + pat + ")$")
		if err != nil {
			return nil, fmt.Errorf("ssl.principal.mapping.rules pattern %q: %w", pat, err)
		}
		r.re = re
		rules = append(rules, r)
		s = rest
	}
	if len(rules) == 0 {
		rules = []PrincipalRule{{def: true}}
	}
	return rules, nil
}

// cutUnescaped returns s up to the first '/' not preceded by '\' (with
// "\/" unescaped), and what follows that '/'.
func cutUnescaped(s string) (string, string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '/':
			b.WriteByte('/')
			i++
		case s[i] == '/':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(s[i])
		}
	}
	return "", "", false
}

// MapPrincipal applies the first rule matching subject. No rule matching
// is an error: the client is refused, as in Kafka.
func MapPrincipal(rules []PrincipalRule, subject string) (string, error) {
	for _, r := range rules {
		if r.def {
			return subject, nil
		}
		if !r.re.MatchString(subject) {
			continue
		}
		out := r.re.ReplaceAllString(subject, r.repl)
		switch r.caseMod {
		case 'L':
			out = strings.ToLower(out)
		case 'U':
			out = strings.ToUpper(out)
		}
		return out, nil
	}
	return "", fmt.Errorf("no ssl.principal.mapping.rules rule applies to %q", subject)
}
