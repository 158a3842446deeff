package cluster

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// ParseProperties reads Java .properties syntax as server.properties uses
// it: key=value or key: value, '#' and '!' comments, trailing backslash
// continues a line. Keys are returned in a map; a repeated key keeps the last
// value, like Java.
func ParseProperties(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var pending strings.Builder
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimLeft(sc.Text(), " \t\f")
		if pending.Len() == 0 && (line == "" || line[0] == '#' || line[0] == '!') {
			continue
		}
		if strings.HasSuffix(line, `\`) && !strings.HasSuffix(line, `\\`) {
			pending.WriteString(strings.TrimSuffix(line, `\`))
			continue
		}
		pending.WriteString(line)
		full := pending.String()
		pending.Reset()
		i := strings.IndexAny(full, "=:")
		if i < 0 {
			// A bare key means an empty value in Java; in a broker config it
			// is almost certainly a typo, so say so.
			return nil, fmt.Errorf("line %d: %q has no '=' or ':'", lineNo, full)
		}
		key := strings.TrimSpace(full[:i])
		val := strings.TrimSpace(full[i+1:])
		if key == "" {
			return nil, fmt.Errorf("line %d: empty key", lineNo)
		}
		out[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
