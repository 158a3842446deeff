package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kgo"
)

func smallConfig(addr string) Config {
	return Config{
		Targets:  []Target{{Name: "embedded", Bootstrap: []string{addr}}},
		Duration: 300 * time.Millisecond, Rounds: 2, Partitions: 3,
		MaxBufferedRecords: 4096, ConsumeBytes: 2 << 20, TxnInterval: 50 * time.Millisecond, AbortEvery: 10,
	}
}

// TestRunEveryMode: a whole benchmark against a real broker measures every
// mode in every round, summarizes them and prints the two comparisons.
func TestRunEveryMode(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	rep, err := Run(context.Background(), smallConfig(br.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() {
		var buf bytes.Buffer
		rep.WriteText(&buf)
		t.Fatalf("a run failed:\n%s", buf.String())
	}
	if got, want := len(rep.Results), 2*len(Modes); got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	rounds := map[string][]int{}
	for _, r := range rep.Results {
		rounds[r.Mode] = append(rounds[r.Mode], r.Round)
		if r.Records <= 0 || r.Bytes <= 0 || r.MBps <= 0 || r.Elapsed <= 0 {
			t.Errorf("%s round %d measured nothing: %+v", r.Mode, r.Round, r)
		}
		if !isConsume(r.Mode) && (r.P50 <= 0 || r.P99 < r.P50 || r.Max < r.P99) {
			t.Errorf("%s latency quantiles out of order: p50 %v p99 %v max %v", r.Mode, r.P50, r.P99, r.Max)
		}
		if r.Mode == Transactional && (r.Commits == 0 || r.Aborts != 0) {
			t.Errorf("transactional run: %d commits, %d aborts", r.Commits, r.Aborts)
		}
		// An in-process broker has no process of its own to measure;
		// the client (this process) always has one.
		if r.BrokerCPU != nil || r.ClientCPU == nil {
			t.Errorf("%s round %d: broker CPU %+v (want not measured), client CPU %+v", r.Mode, r.Round, r.BrokerCPU, r.ClientCPU)
		}
	}
	for _, m := range Modes {
		if len(rounds[m]) != 2 {
			t.Errorf("%s ran in rounds %v, want both", m, rounds[m])
		}
	}
	if len(rep.Summaries) != len(Modes) || len(rep.Comparisons) != 7 {
		t.Fatalf("%d summaries and %d comparisons", len(rep.Summaries), len(rep.Comparisons))
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"transactional vs idempotent", "read-committed vs read-uncommitted", "embedded  read-committed"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestProduceRunCountsWhatTheLogHolds: the records a produce run reports
// are exactly the ones a reader finds (committed ones, for transactions),
// not what was sent — the warm-up record aside.
func TestProduceRunCountsWhatTheLogHolds(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	cfg := smallConfig(br.Addr())
	cfg.Producers = 2
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	value := []byte("0123456789")
	for _, mode := range []string{AtLeastOnce, Idempotent, IdempotentFlush, Transactional} {
		topic := "count-" + mode
		res := produceRun(context.Background(), cfg, cfg.Targets[0], mode, topic, "count", value)
		if res.Err != "" {
			t.Fatalf("%s: %s", mode, res.Err)
		}
		warmup := int64(cfg.Producers) // transactional warm-ups are aborted
		if mode == Transactional {
			warmup = 0
		}
		if got := countRecords(t, br.Addr(), topic, cfg.Partitions); got != res.Records+warmup {
			t.Errorf("%s: reported %d records (+%d warm-up), a read_committed reader finds %d", mode, res.Records, warmup, got)
		}
		if res.Bytes != res.Records*int64(len(value)) {
			t.Errorf("%s: %d bytes for %d records of %d bytes", mode, res.Bytes, res.Records, len(value))
		}
	}
}

// TestConsumeRunsSeeTheirIsolationLevel: the prefilled topic has aborted
// transactions, which read_uncommitted delivers and read_committed skips;
// both count the same log bytes.
func TestConsumeRunsSeeTheirIsolationLevel(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	cfg := smallConfig(br.Addr())
	cfg.TxnInterval = 5 * time.Millisecond // many transactions, so some are aborted
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1024)
	p, err := prefill(context.Background(), cfg, cfg.Targets[0], "consume", value)
	if err != nil {
		t.Fatal(err)
	}
	ru := consumeRun(context.Background(), cfg, cfg.Targets[0], ReadUncommitted, p)
	rc := consumeRun(context.Background(), cfg, cfg.Targets[0], ReadCommitted, p)
	if ru.Err != "" || rc.Err != "" {
		t.Fatalf("read_uncommitted: %s; read_committed: %s", ru.Err, rc.Err)
	}
	if ru.Records != p.bytes/int64(len(value)) {
		t.Errorf("read_uncommitted delivered %d records, the topic holds %d", ru.Records, p.bytes/int64(len(value)))
	}
	if rc.Records >= ru.Records || rc.Records == 0 {
		t.Errorf("read_committed delivered %d records, read_uncommitted %d: aborted ones should be skipped", rc.Records, ru.Records)
	}
	if ru.Bytes != rc.Bytes {
		t.Errorf("log bytes differ: %d vs %d", ru.Bytes, rc.Bytes)
	}

	// With nothing aborted both levels deliver every record.
	cfg.AbortEvery = 0
	p, err = prefill(context.Background(), cfg, cfg.Targets[0], "consume-committed", value)
	if err != nil {
		t.Fatal(err)
	}
	ru = consumeRun(context.Background(), cfg, cfg.Targets[0], ReadUncommitted, p)
	rc = consumeRun(context.Background(), cfg, cfg.Targets[0], ReadCommitted, p)
	if ru.Err != "" || rc.Err != "" || ru.Records != rc.Records || ru.Records != p.bytes/int64(len(value)) {
		t.Errorf("nothing aborted: read_uncommitted %d records (%s), read_committed %d (%s), topic %d",
			ru.Records, ru.Err, rc.Records, rc.Err, p.bytes/int64(len(value)))
	}
}

// countRecords is how many records a read_committed reader of topic finds.
func countRecords(t *testing.T, addr, topic string, partitions int32) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var n int64
	for {
		// The first fetch waits for metadata and offsets, which on a
		// loaded machine can take seconds; after that, a second without
		// records is the end.
		wait := time.Second
		if n == 0 {
			wait = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		cancel()
		got := fs.NumRecords()
		n += int64(got)
		if got == 0 {
			return n
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "nothing to measure"},
		{Config{Targets: []Target{{Name: "x", Bootstrap: []string{"a:1"}}}, Modes: []string{"exactly-twice"}}, "unknown mode"},
		{Config{Targets: []Target{{Name: "x", Bootstrap: []string{"a:1"}}}, Rate: -1}, "negative rate"},
		{Config{Targets: []Target{{Name: "x", Bootstrap: []string{"a:1"}}}, AbortEvery: -1}, "negative abort interval"},
	} {
		_, err := Run(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{
		"kafka=h1:9092,h2:9092": {Name: "kafka", Bootstrap: []string{"h1:9092", "h2:9092"}},
		"127.0.0.1:9092":        {Name: "127.0.0.1:9092", Bootstrap: []string{"127.0.0.1:9092"}},
	} {
		got, err := ParseTarget(in)
		if err != nil || got.Name != want.Name || strings.Join(got.Bootstrap, ",") != strings.Join(want.Bootstrap, ",") {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "kafka=", " , "} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
}

// TestRunTargetsSideBySide: two clusters in one run each get every mode in
// every round, and the report keeps them apart.
func TestRunTargetsSideBySide(t *testing.T) {
	a := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	cfg := smallConfig(a.Addr())
	cfg.Targets = append(cfg.Targets, Target{Name: "peer", Bootstrap: []string{b.Addr()}})
	cfg.Modes = []string{Idempotent, Transactional}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() {
		t.Fatalf("a run failed: %+v", rep.Results)
	}
	runs := map[string]int{}
	for _, r := range rep.Results {
		runs[r.Target+"/"+r.Mode]++
	}
	for _, k := range []string{"embedded/idempotent", "embedded/transactional", "peer/idempotent", "peer/transactional"} {
		if runs[k] != cfg.Rounds {
			t.Errorf("%s ran %d times, want %d (all: %v)", k, runs[k], cfg.Rounds, runs)
		}
	}
	comparisons := map[string]bool{}
	for _, c := range rep.Comparisons {
		comparisons[c.Target] = true
	}
	if !comparisons["embedded"] || !comparisons["peer"] {
		t.Errorf("comparisons cover %v, want both targets", comparisons)
	}
}

// TestRunTwoTargetsOnOneCluster: two targets may be the same cluster (a
// PLAINTEXT and a SASL_SSL listener of one broker side by side); their
// topics and transactional ids must not collide.
func TestRunTwoTargetsOnOneCluster(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	cfg := smallConfig(br.Addr())
	cfg.Targets = append(cfg.Targets, Target{Name: "again", Bootstrap: []string{br.Addr()}})
	cfg.Rounds, cfg.Modes = 1, []string{Transactional, ReadCommitted}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	if rep.Failed() || len(rep.Results) != 4 {
		t.Fatalf("%d results, failed %v:\n%s", len(rep.Results), rep.Failed(), buf.String())
	}
}

// TestRunTopicConfigs: topic configs reach the benchmark topics, a
// target's own over everyone's. compression.type=brotli is refused, so the
// target without its own compression.type fails and the one with zstd runs.
func TestRunTopicConfigs(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	cfg := smallConfig(br.Addr())
	cfg.Targets[0].TopicConfigs = map[string]string{"compression.type": "zstd"}
	cfg.Targets = append(cfg.Targets, Target{Name: "refused", Bootstrap: []string{br.Addr()}})
	cfg.TopicConfigs = map[string]string{"compression.type": "brotli"}
	cfg.Rounds, cfg.Modes = 1, []string{Idempotent}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		switch r.Target {
		case "embedded":
			if r.Err != "" || r.Records == 0 {
				t.Errorf("zstd topic: %+v", r)
			}
		case "refused":
			if !strings.Contains(r.Err, "INVALID_CONFIG") {
				t.Errorf("compression.type=brotli: %+v, want INVALID_CONFIG", r)
			}
		}
	}
	if !strings.Contains(rep.Settings, "embedded's topics with compression.type=zstd") {
		t.Errorf("settings do not name the topic configs: %s", rep.Settings)
	}
}

// TestRunWhileCleaning: with WhileCleaning every produce mode runs alone
// and beside the background writer in each round, the busy run first in
// every other round; the report pairs them, and the target's cleaner
// metrics show that the cleaner rewrote segments of the writer's
// compacted topic during the busy runs.
func TestRunWhileCleaning(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir(), MetricsListen: "127.0.0.1:0",
		Config: map[string]string{"log.cleaner.backoff.ms": CleanerBackoff}})
	cfg := smallConfig(br.Addr())
	cfg.Targets[0].MetricsURL = "http://" + br.MetricsAddr() + "/metrics"
	// Long enough for the writer to roll several 1 MiB segments.
	cfg.Duration, cfg.Modes, cfg.WhileCleaning = time.Second, []string{Idempotent, ReadCommitted}, true
	rep, buf := runOK(t, cfg)
	var order []string
	for _, r := range rep.Results {
		if r.Mode != Idempotent {
			if r.WhileCleaning {
				t.Errorf("%s ran with the background writer", r.Mode)
			}
			continue
		}
		order = append(order, fmt.Sprintf("%d:%v", r.Round, r.WhileCleaning))
		if r.Cleaner == nil {
			t.Errorf("round %d: cleaner activity not recorded", r.Round)
		}
		if r.WhileCleaning != (r.BackgroundBytes > 0) {
			t.Errorf("round %d while cleaning %v: background writer wrote %d bytes", r.Round, r.WhileCleaning, r.BackgroundBytes)
		}
	}
	if got, want := strings.Join(order, " "), "0:false 0:true 1:true 1:false"; got != want {
		t.Errorf("idempotent runs (round:while cleaning) %s, want %s", got, want)
	}
	var c *Comparison
	for i := range rep.Comparisons {
		if rep.Comparisons[i].WhileCleaning {
			if c != nil {
				t.Fatalf("two while-cleaning comparisons: %+v", rep.Comparisons)
			}
			c = &rep.Comparisons[i]
		}
	}
	if c == nil || c.Mode != Idempotent || c.Rounds != 2 {
		t.Fatalf("while-cleaning comparison %+v, want idempotent over 2 rounds:\n%s", c, buf.String())
	}
	if c.BackgroundBytes < 1<<20 {
		t.Errorf("the background writer wrote %d bytes, not even one segment", c.BackgroundBytes)
	}
	if c.Cleaner == nil || c.Cleaner.Runs == 0 || c.Cleaner.BytesRead == 0 || c.Cleaner.BytesWritten == 0 {
		t.Errorf("the cleaner did nothing during the busy runs: %+v", c.Cleaner)
	}
	for _, want := range []string{"idempotent while cleaning vs alone", "embedded  idempotent while cleaning", "the cleaner read"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestRunPrefillFailureFailsOnlyItsRows: a target that refuses
// transactions (here: a transaction.max.timeout.ms below the client's
// transaction timeout) cannot be prefilled; its consume and transactional
// rows fail with the reason and the rest of the benchmark still runs.
func TestRunPrefillFailureFailsOnlyItsRows(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir(),
		Config: map[string]string{"transaction.max.timeout.ms": "1000"}})
	cfg := smallConfig(br.Addr())
	cfg.Rounds, cfg.Modes = 1, []string{Idempotent, Transactional, ReadCommitted}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("the benchmark stopped: %v", err)
	}
	for _, r := range rep.Results {
		switch r.Mode {
		case Idempotent:
			if r.Err != "" || r.Records == 0 {
				t.Errorf("idempotent: %+v", r)
			}
		case ReadCommitted:
			if !strings.Contains(r.Err, "prefilling the consume topic") || !strings.Contains(r.Err, "INVALID_TRANSACTION_TIMEOUT") {
				t.Errorf("read-committed: error %q, want the prefill's", r.Err)
			}
		case Transactional:
			if r.Err == "" {
				t.Errorf("transactional ran: %+v", r)
			}
		}
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	if !strings.Contains(buf.String(), "embedded  read-committed  failed") {
		t.Errorf("the table does not show the failed row:\n%s", buf.String())
	}
}

// TestGroupModesConsumeEveryRecordOnce: the share modes (1, 4 and 16
// consumers on one partition) and the classic group hand out every
// prefilled record exactly once per run, the groups finish every record
// durably (the share-partition start offset, the committed offsets, at
// the end), and the report compares each share mode with the classic
// group.
func TestGroupModesConsumeEveryRecordOnce(t *testing.T) {
	br := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	cfg := smallConfig(br.Addr())
	cfg.Modes = []string{Share1, Share4, Share16, ClassicGroup}
	rep, buf := runOK(t, cfg)
	want := cfg.ConsumeBytes / 1024 // smallConfig's records are 1 KiB
	runs := map[string]int{}
	for _, r := range rep.Results {
		runs[r.Mode]++
		consumers := shareConsumers(r.Mode)
		if r.Mode == ClassicGroup {
			consumers = int(cfg.Partitions)
		}
		if r.Records != want || r.Settled != want || r.Redelivered != 0 || r.Consumers != consumers {
			t.Errorf("%s round %d: %d records delivered, %d redelivered, %d settled by %d consumers; want each of %d once, all settled, by %d",
				r.Mode, r.Round, r.Records, r.Redelivered, r.Settled, r.Consumers, want, consumers)
		}
		if r.MBps <= 0 || r.Bytes != want*1024 {
			t.Errorf("%s round %d measured %v MB/s over %d bytes", r.Mode, r.Round, r.MBps, r.Bytes)
		}
	}
	for _, m := range cfg.Modes {
		if runs[m] != cfg.Rounds {
			t.Errorf("%s ran %d times, want %d", m, runs[m], cfg.Rounds)
		}
	}
	for _, want := range []string{"share-1 vs classic-group", "share-4 vs classic-group", "share-16 vs classic-group", "embedded  share-16"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}
