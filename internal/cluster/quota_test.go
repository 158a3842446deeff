package cluster

import (
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

func TestClientQuotasSurviveReopenAndOldCatalogsRead(t *testing.T) {
	dir := t.TempDir()
	fs := vfs.OS()
	// A catalog written before quotas existed has no client_quotas key.
	old := `{"cluster_id":"abc","topics":[],"broker_configs":{"log.retention.ms":"3600000"}}`
	if err := vfs.WriteFileAtomic(fs, filepath.Join(dir, catalogName), []byte(old)); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCatalog(fs, dir, nil)
	if err != nil {
		t.Fatalf("opening a catalog without quotas: %v", err)
	}
	if c.ClusterID() != "abc" || len(c.ClientQuotas()) != 0 {
		t.Fatalf("cluster id %q, quotas %v", c.ClusterID(), c.ClientQuotas())
	}
	app := "app"
	q := []ClientQuota{
		{Entity: []QuotaEntityPart{{Type: "client-id", Name: &app}}, Values: map[string]float64{"producer_byte_rate": 1048576}},
		{Entity: []QuotaEntityPart{{Type: "user", Name: nil}}, Values: map[string]float64{"request_percentage": 12.5}},
	}
	if err := c.SetClientQuotas(q); err != nil {
		t.Fatal(err)
	}
	c2, err := OpenCatalog(fs, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := c2.ClientQuotas()
	if len(got) != 2 || *got[0].Entity[0].Name != "app" || got[0].Values["producer_byte_rate"] != 1048576 ||
		got[1].Entity[0].Name != nil || got[1].Values["request_percentage"] != 12.5 {
		t.Fatalf("reopened quotas = %+v", got)
	}
	if v, _ := c2.BrokerConfig("log.retention.ms"); v != "3600000" {
		t.Fatalf("dynamic broker config lost: log.retention.ms = %q", v)
	}
}
