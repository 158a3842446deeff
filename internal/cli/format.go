package cli

import (
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultFormat is the consume output format used when --format is not
// given: the record value followed by a newline.
const DefaultFormat = `%s\n`

// formatHelp documents the --format directives.
const formatHelp = `output format: %t topic, %p partition, %o offset, %k key, %K key size,
%s value, %S value size, %T timestamp (ms), %h headers (k=v,k=v), %P producer id,
%E producer epoch (-1 for a non-idempotent producer), %% percent; escapes \n \t \r \\`

// recordFormat is a compiled --format string: literal runs interleaved with
// directives.
type recordFormat []formatPiece

// formatPiece is either literal text (verb == 0) or one % directive.
type formatPiece struct {
	verb byte
	lit  []byte
}

// parseFormat compiles a kcat-style format string. It fails on an unknown
// directive or escape so that a typo does not silently print garbage.
func parseFormat(s string) (recordFormat, error) {
	var (
		f   recordFormat
		lit []byte
	)
	flush := func() {
		if len(lit) > 0 {
			f = append(f, formatPiece{lit: lit})
			lit = nil
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '%', '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("invalid --format %q: dangling %q at the end", s, string(c))
			}
			i++
			n := s[i]
			if c == '\\' {
				switch n {
				case 'n':
					lit = append(lit, '\n')
				case 't':
					lit = append(lit, '\t')
				case 'r':
					lit = append(lit, '\r')
				case '\\':
					lit = append(lit, '\\')
				default:
					return nil, fmt.Errorf("invalid --format %q: unknown escape \\%c", s, n)
				}
				continue
			}
			switch n {
			case '%':
				lit = append(lit, '%')
			case 't', 'p', 'o', 'k', 'K', 's', 'S', 'T', 'h', 'P', 'E':
				flush()
				f = append(f, formatPiece{verb: n})
			default:
				return nil, fmt.Errorf("invalid --format %q: unknown directive %%%c", s, n)
			}
		default:
			lit = append(lit, c)
		}
	}
	flush()
	return f, nil
}

// appendRecord appends r rendered through f to dst.
func (f recordFormat) appendRecord(dst []byte, r *kgo.Record) []byte {
	for _, p := range f {
		switch p.verb {
		case 0:
			dst = append(dst, p.lit...)
		case 't':
			dst = append(dst, r.Topic...)
		case 'p':
			dst = strconv.AppendInt(dst, int64(r.Partition), 10)
		case 'o':
			dst = strconv.AppendInt(dst, r.Offset, 10)
		case 'k':
			dst = append(dst, r.Key...)
		case 'K':
			dst = strconv.AppendInt(dst, int64(len(r.Key)), 10)
		case 's':
			dst = append(dst, r.Value...)
		case 'S':
			dst = strconv.AppendInt(dst, int64(len(r.Value)), 10)
		case 'T':
			dst = strconv.AppendInt(dst, r.Timestamp.UnixMilli(), 10)
		case 'P':
			dst = strconv.AppendInt(dst, r.ProducerID, 10)
		case 'E':
			dst = strconv.AppendInt(dst, int64(r.ProducerEpoch), 10)
		case 'h':
			for i, h := range r.Headers {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, h.Key...)
				dst = append(dst, '=')
				dst = append(dst, h.Value...)
			}
		}
	}
	return dst
}
