package cli

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFormatDirectives(t *testing.T) {
	t.Parallel()
	r := &kgo.Record{
		Topic:         "t",
		Partition:     2,
		Offset:        41,
		Key:           []byte("key"),
		Value:         []byte("value"),
		Timestamp:     time.UnixMilli(1700000000123),
		Headers:       []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}},
		ProducerID:    7001,
		ProducerEpoch: 3,
	}
	for _, tc := range []struct{ format, want string }{
		{DefaultFormat, "value\n"},
		{`%t/%p@%o`, "t/2@41"},
		{`%k=%s (%K,%S)`, "key=value (3,5)"},
		{`%T`, "1700000000123"},
		{`[%h]`, "[a=1,b=2]"},
		{`%P/%E`, "7001/3"},
		{`100%% \\ \t|\r\n`, "100% \\ \t|\r\n"},
		{``, ``},
	} {
		f, err := parseFormat(tc.format)
		if err != nil {
			t.Fatalf("parseFormat(%q): %v", tc.format, err)
		}
		if got := string(f.appendRecord(nil, r)); got != tc.want {
			t.Errorf("format %q = %q, want %q", tc.format, got, tc.want)
		}
	}
	// A record without key or headers renders them empty.
	f, _ := parseFormat(`<%k|%h|%s>`)
	if got := string(f.appendRecord(nil, &kgo.Record{Value: []byte("v")})); got != "<||v>" {
		t.Errorf("empty key/headers = %q", got)
	}
}

func TestFormatErrors(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{`%x`, `abc%`, `\q`, `tail\`} {
		if _, err := parseFormat(bad); err == nil {
			t.Errorf("parseFormat(%q) succeeded, want an error", bad)
		}
	}
}
