package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func admin(t *testing.T, addr string) (*kadm.Client, context.Context) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(func() { cancel(); cl.Close() })
	return kadm.NewClient(cl), ctx
}

func str(s string) *string { return &s }

// quotaLines renders described quotas one entity per line, sorted.
func quotaLines(qs kadm.DescribedClientQuotas) []string {
	var out []string
	for _, q := range qs {
		var vs []string
		for _, v := range q.Values {
			vs = append(vs, fmt.Sprintf("%s=%g", v.Key, v.Value))
		}
		slices.Sort(vs)
		out = append(out, q.Entity.String()+" "+strings.Join(vs, ","))
	}
	slices.Sort(out)
	return out
}

func describeAll(t *testing.T, adm *kadm.Client, ctx context.Context) []string {
	t.Helper()
	qs, err := adm.DescribeClientQuotas(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return quotaLines(qs)
}

func brokerConfigs(t *testing.T, adm *kadm.Client, ctx context.Context) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, rc := range rcs {
		if rc.Err != nil {
			t.Fatal(rc.Err)
		}
		for _, c := range rc.Configs {
			out[c.Key] = c.MaybeValue()
		}
	}
	return out
}

// TestClientQuotasAlterDescribeAndSurviveRestart covers AlterClientQuotas
// validation (Kafka's codes and messages, entries independent of each
// other, validate_only), DescribeClientQuotas filters, persistence across
// a restart, and that broker configs do not change.
func TestClientQuotasAlterDescribeAndSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := exactly.Start(exactly.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	adm, ctx := admin(t, b.Addr())
	configsBefore := brokerConfigs(t, adm, ctx)
	if configsBefore["quota.window.num"] != "11" || configsBefore["quota.window.size.seconds"] != "1" {
		t.Errorf("quota window configs = %q, %q; want 11, 1", configsBefore["quota.window.num"], configsBefore["quota.window.size.seconds"])
	}

	set := func(key string, v float64) kadm.AlterClientQuotaOp {
		return kadm.AlterClientQuotaOp{Key: key, Value: v}
	}
	app := kadm.ClientQuotaEntity{{Type: "client-id", Name: str("app")}}
	entries := []kadm.AlterClientQuotaEntry{
		{Entity: app, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 1048576), set("consumer_byte_rate", 2097152)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id"}}, Ops: []kadm.AlterClientQuotaOp{set("request_percentage", 50)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "user", Name: str("ANONYMOUS")}, {Type: "client-id", Name: str("app")}}, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 4096)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "user"}}, Ops: []kadm.AlterClientQuotaOp{set("consumer_byte_rate", 1000)}},
		// Refused, each alone; the entries above still apply.
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: str("x")}}, Ops: []kadm.AlterClientQuotaOp{set("bogus_rate", 1)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: str("y")}}, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", -5)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "group", Name: str("g")}}, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 5)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: str("z")}}, Ops: []kadm.AlterClientQuotaOp{set("consumer_byte_rate", 1.5)}},
		{Entity: nil, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 5)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: str("w")}}, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 1), set("producer_byte_rate", 2)}},
	}
	res, err := adm.AlterClientQuotas(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	wantErrs := []string{"", "", "", "",
		"Invalid configuration key bogus_rate",
		"Quota producer_byte_rate must be greater than 0",
		"Unhandled client quota entity type: group",
		"consumer_byte_rate cannot be a fractional value.",
		"Invalid empty client quota entity",
		"Duplicate quota key producer_byte_rate",
	}
	if len(res) != len(wantErrs) {
		t.Fatalf("%d results for %d entries", len(res), len(wantErrs))
	}
	for i, r := range res {
		if wantErrs[i] == "" {
			if r.Err != nil {
				t.Errorf("entry %d (%v): %v %s", i, r.Entity, r.Err, r.ErrMessage)
			}
			continue
		}
		if !errors.Is(r.Err, kerr.InvalidRequest) || !strings.Contains(r.ErrMessage, wantErrs[i]) {
			t.Errorf("entry %d (%v): %v %q, want INVALID_REQUEST %q", i, r.Entity, r.Err, r.ErrMessage, wantErrs[i])
		}
	}

	// validate_only checks and stores nothing.
	vres, err := adm.ValidateAlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: str("dry")}}, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 10)}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: str("dry")}}, Ops: []kadm.AlterClientQuotaOp{set("producer_byte_rate", 0)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if vres[0].Err != nil || !errors.Is(vres[1].Err, kerr.InvalidRequest) {
		t.Errorf("validate-only results: %v; %v %s", vres[0].Err, vres[1].Err, vres[1].ErrMessage)
	}

	want := []string{
		"{client-id=<default>} request_percentage=50",
		"{client-id=app} consumer_byte_rate=2.097152e+06,producer_byte_rate=1.048576e+06",
		"{user=<default>} consumer_byte_rate=1000",
		"{user=ANONYMOUS, client-id=app} producer_byte_rate=4096",
	}
	if got := describeAll(t, adm, ctx); !slices.Equal(got, want) {
		t.Fatalf("described:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Filters: exact, default, specified, strict.
	filters := []struct {
		strict bool
		cs     []kadm.DescribeClientQuotaComponent
		want   []string
	}{
		{false, []kadm.DescribeClientQuotaComponent{{Type: "client-id", MatchName: str("app"), MatchType: 0}}, []string{want[1], want[3]}},
		{true, []kadm.DescribeClientQuotaComponent{{Type: "client-id", MatchName: str("app"), MatchType: 0}}, []string{want[1]}},
		{false, []kadm.DescribeClientQuotaComponent{{Type: "client-id", MatchType: 1}}, []string{want[0]}},
		{false, []kadm.DescribeClientQuotaComponent{{Type: "user", MatchType: 2}}, []string{want[2], want[3]}},
		{true, []kadm.DescribeClientQuotaComponent{{Type: "user", MatchType: 2}}, []string{want[2]}},
		{false, []kadm.DescribeClientQuotaComponent{{Type: "ip", MatchType: 2}}, nil},
	}
	for _, f := range filters {
		qs, err := adm.DescribeClientQuotas(ctx, f.strict, f.cs)
		if err != nil {
			t.Fatalf("filter %+v: %v", f.cs, err)
		}
		if got := quotaLines(qs); !slices.Equal(got, f.want) {
			t.Errorf("filter %+v strict=%v: got %q, want %q", f.cs, f.strict, got, f.want)
		}
	}
	for _, bad := range []struct {
		cs   []kadm.DescribeClientQuotaComponent
		code error
		msg  string
	}{
		{[]kadm.DescribeClientQuotaComponent{{Type: "user", MatchType: 2}, {Type: "user", MatchType: 1}}, kerr.InvalidRequest, "cannot appear more than once"},
		{[]kadm.DescribeClientQuotaComponent{{Type: "client-id", MatchType: 0}}, kerr.InvalidRequest, "MATCH_TYPE_EXACT, but set match string to null"},
		{[]kadm.DescribeClientQuotaComponent{{Type: "group", MatchType: 2}}, kerr.UnsupportedVersion, "Unsupported entity type group"},
		{[]kadm.DescribeClientQuotaComponent{{Type: "ip", MatchType: 2}, {Type: "user", MatchType: 2}}, kerr.InvalidRequest, "IP filter component should not be used"},
	} {
		_, err := adm.DescribeClientQuotas(ctx, false, bad.cs)
		if !errors.Is(err, bad.code) || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("filter %+v: %v, want %v %q", bad.cs, err, bad.code, bad.msg)
		}
	}

	// Broker configs are not quotas and did not change.
	if after := brokerConfigs(t, adm, ctx); len(after) != len(configsBefore) {
		t.Errorf("DescribeConfigs lists %d broker keys after altering quotas, %d before", len(after), len(configsBefore))
	} else {
		for k, v := range configsBefore {
			if after[k] != v {
				t.Errorf("broker config %s = %q after altering quotas, was %q", k, after[k], v)
			}
		}
	}

	// Persistence.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = exactly.Start(exactly.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	adm, ctx = admin(t, b.Addr())
	if got := describeAll(t, adm, ctx); !slices.Equal(got, want) {
		t.Fatalf("after restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Removing every key removes the entity; removing an absent key is fine.
	rm := func(key string) kadm.AlterClientQuotaOp { return kadm.AlterClientQuotaOp{Key: key, Remove: true} }
	res, err = adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{
		{Entity: app, Ops: []kadm.AlterClientQuotaOp{rm("producer_byte_rate"), rm("consumer_byte_rate"), rm("request_percentage")}},
	})
	if err != nil || res[0].Err != nil {
		t.Fatalf("removing: %v %v", err, res)
	}
	if got := describeAll(t, adm, ctx); slices.Contains(got, want[1]) || len(got) != 3 {
		t.Errorf("after removing client-id=app: %q", got)
	}
}

// TestThrottledResponsesCarryThrottleTime checks the raw response field a
// client library reads, for an API other than produce and fetch: with a
// tiny request_percentage on the client-id default, Metadata answers
// eventually carry throttle_time_ms.
func TestThrottledResponsesCarryThrottleTime(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{MetricsListen: "127.0.0.1:0"})
	adm, ctx := admin(t, b.Addr())
	res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{
		Entity: kadm.ClientQuotaEntity{{Type: "client-id"}},
		Ops:    []kadm.AlterClientQuotaOp{{Key: "request_percentage", Value: 0.001}},
	}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("%v %v", err, res)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ClientID("chatty"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for range 2000 {
		resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ThrottleMillis > 0 {
			if resp.ThrottleMillis > 1000 {
				t.Errorf("throttle %d ms, above the 1 s cap of request throttles", resp.ThrottleMillis)
			}
			metrics := scrape(t, b.MetricsAddr())
			if !strings.Contains(metrics, `kafka_server_quota_throttled_requests_total{quota_type="Request"}`) ||
				!strings.Contains(metrics, `kafka_server_quota_throttle_time_seconds_count{quota_type="Request"}`) {
				t.Errorf("throttle metrics missing from /metrics")
			}
			return
		}
	}
	t.Fatalf("2000 Metadata requests at request_percentage=0.001 never throttled")
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
