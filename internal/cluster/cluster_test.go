package cluster

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

func TestParseProperties(t *testing.T) {
	in := "# comment\n! also comment\n\nlog.dirs=/var/data\nnum.partitions : 3\nlong.value=a,\\\n  b\n  spaced.key =  v  \n"
	got, err := ParseProperties(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"log.dirs": "/var/data", "num.partitions": "3", "long.value": "a,b", "spaced.key": "v"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := ParseProperties(strings.NewReader("just-a-key\n")); err == nil {
		t.Error("a line without a separator was accepted")
	}
}

func TestTopicNames(t *testing.T) {
	for _, ok := range []string{"a", "A.b_c-1", strings.Repeat("x", 249)} {
		if err := ValidateTopicName(ok); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", "ü", strings.Repeat("x", 250)} {
		if err := ValidateTopicName(bad); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCatalogPersistsAndResolvesConfigs(t *testing.T) {
	mem := vfs.NewMem()
	c, err := OpenCatalog(mem, "/d", map[string]string{"log.retention.hours": "1"})
	if err != nil {
		t.Fatal(err)
	}
	tp, err := c.CreateTopic("a.b", 2, map[string]string{"retention.bytes": "100"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTopic("a_b", 1, nil, false); !errors.Is(err, ErrInvalidTopic) {
		t.Errorf("colliding name accepted: %v", err)
	}
	if _, err := c.CreateTopic("x", 1, map[string]string{"cleanup.policy": "compact,shred"}, false); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("unknown cleanup policy accepted: %v", err)
	}
	if _, err := c.CreateTopic("x", 1, map[string]string{"min.cleanable.dirty.ratio": "1.5"}, false); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("dirty ratio above 1 accepted: %v", err)
	}
	if _, err := c.CreateTopic("compacted", 1, map[string]string{"cleanup.policy": "compact,delete", "delete.retention.ms": "0"}, false); err != nil {
		t.Errorf("compact,delete refused: %v", err)
	}
	if err := c.SetBrokerDynamic(map[string]string{"log.retention.bytes": "5"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBrokerDynamic(map[string]string{"node.id": "3"}); !errors.Is(err, ErrReadOnlyConfig) {
		t.Errorf("static key changed dynamically: %v", err)
	}
	// Only what was made durable survives a crash: every change here was.
	c2, err := OpenCatalog(mem.Crash(nil), "/d", map[string]string{"log.retention.hours": "1"})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := c2.Topic("a.b")
	if !ok || got.ID != tp.ID || got.Partitions != 2 || c2.ClusterID() != c.ClusterID() {
		t.Fatalf("after crash: %+v %v", got, ok)
	}
	for key, want := range map[string]struct {
		v   string
		src ConfigSource
	}{
		"retention.bytes": {"100", SourceDynamicTopic},
		"retention.ms":    {"3600000", SourceStaticBroker},
		"segment.bytes":   {"1073741824", SourceDefault},
	} {
		v, src := c2.TopicConfig(got, key)
		if v != want.v || src != want.src {
			t.Errorf("%s = %s (source %d), want %s (%d)", key, v, src, want.v, want.src)
		}
	}
	if v, src := c2.BrokerConfig("log.retention.bytes"); v != "5" || src != SourceDynamicDefaultBroker {
		t.Errorf("dynamic broker config: %s %d", v, src)
	}
}

// A read-only key persisted as a dynamic override (by a version that let
// clients change it) is dropped on open: the static value applies again,
// and later dynamic changes are not refused because of it.
func TestCatalogDropsPersistedReadOnlyOverrides(t *testing.T) {
	mem := vfs.NewMem()
	if err := mem.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := mem.OpenFile("/d/"+catalogName, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(`{"cluster_id":"c","topics":[],"broker_configs":{"delete.topic.enable":"true","log.retention.ms":"5"}}`))
	f.Close()
	c, err := OpenCatalog(mem, "/d", map[string]string{"delete.topic.enable": "false"})
	if err != nil {
		t.Fatal(err)
	}
	if v, src := c.BrokerConfig("delete.topic.enable"); v != "false" || src != SourceStaticBroker {
		t.Errorf("delete.topic.enable = %s from %v, want the static false", v, src)
	}
	if v, _ := c.BrokerConfig("log.retention.ms"); v != "5" {
		t.Errorf("dynamic log.retention.ms = %s, want 5 kept", v)
	}
	next := c.BrokerDynamic()
	next["log.retention.bytes"] = "7"
	if err := c.SetBrokerDynamic(next); err != nil {
		t.Errorf("a dynamic change after open: %v", err)
	}
}
