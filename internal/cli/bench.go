package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/exactly/exactly/bench"
	"github.com/exactly/exactly/clientconf"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
)

type benchFlags struct {
	conn                 connFlags
	targets              []string
	targetConfigs        []string
	topicConfigs         []string
	metricsURLs          []string
	baselines            []string
	managed, asJSON      bool
	kfake, kfakeDurable  bool
	report               string
	whileCleaning        bool
	cleaningRate         float64
	quiet                bool
	modes                string
	duration, txn        time.Duration
	linger               time.Duration
	rounds, producers    int
	abortEvery, brokers  int
	recordSize, buffered int
	partitions           int32
	replication          int16
	rate                 float64
	consumeMiB           int64
	dir                  string
}

// BenchCommand returns the "bench" command: throughput and latency per
// delivery guarantee, against a managed broker and any Kafka-compatible
// clusters side by side.
func BenchCommand() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput and latency per delivery guarantee, side by side across clusters",
		Long: `Produce and consume with franz-go in each delivery mode and report
throughput (median of interleaved rounds, with the spread) and produce
latency:

  at-most-once      acks=0, no idempotence
  at-least-once     acks=all, no idempotence, 5 requests in flight
  idempotent        acks=all, idempotent producer
  idempotent-flush  idempotent, flushing every --txn-interval as a commit must
                    (no transaction): the client's share of a commit's cost
  transactional     idempotent, transactions committed every --txn-interval
                    (only committed records count)
  read-uncommitted  read a prefilled transactional topic to its end (every
                    --abort-every-th transaction aborted)
  read-committed    the same topic with isolation_level=read_committed
  share-1, share-4, share-16
                    1, 4 or 16 consumers of a share group (KIP-932) read a
                    prefilled 1-partition topic to its end, ACCEPTing every
                    record
  classic-group     one consumer per partition (--partitions of them) in a
                    classic consumer group read a prefilled topic to its
                    end, committing after every poll

The group modes use a fresh group per run (deleted afterwards) and start
the clock once every consumer has its assignment; a run fails unless every
record was delivered and the group finished it durably (the share-partition
start offset, or the committed offsets, at the end). Records delivered twice
are counted once and listed under the table.

Each round runs every mode on every target once, in a rotating order, so a
drift in the machine does not favour one mode. The cost of exactly-once is
printed as comparisons, each the median of the per-round ratios:
transactional vs idempotent (the whole cost on the produce path), split into
idempotent-flush vs idempotent (the client draining its pipeline at every
commit) and transactional vs idempotent-flush (the transaction itself), and
read-committed vs read-uncommitted. Each share mode is compared with the
classic group: what reading one partition with N share consumers costs
against spreading the records over partitions. With 6 or more rounds, each
comparison also prints the median's confidence interval (sign test; at
least 95%, the exact coverage printed), which assumes nothing about how
runs spread: if it is wide, run more rounds before believing the median.

With no --bootstrap, an exactly broker is started on a temporary directory
(a separate process, on the real disk). --bootstrap may be repeated, as
name=host:port,host:port, to put other clusters (Apache Kafka, another
exactly) in the same table; add --managed to include the local broker too.
The connection flags (--tls*, --sasl-*, --command-config) apply to every
--bootstrap target, not to the managed broker; with --command-config naming
bootstrap.servers and no --bootstrap, that cluster is the target.
--target-config name=client.properties gives one named target its own
client properties instead (to measure a PLAINTEXT and a SASL_SSL listener
side by side). --topic-config key=value sets a config on every benchmark
topic, --topic-config name/key=value on one named target's only: two
--bootstrap targets naming the same broker with different compression.type
compare the two in the same interleaved rounds.

--kfake adds franz-go's kfake fake cluster as a target named "kfake" (one
broker, its log in memory), --kfake-durable one named "kfake-durable" (kfake
persisting to a data directory with an fsync per written batch). Each runs
as a child process of its own (the hidden "exactly kfake"), like the
managed broker, so the same table compares them with no setup; they do not
replace the managed broker, which runs as usual when there is no
--bootstrap.

For the managed broker and kfake (the processes bench started), the table
gives the broker's CPU seconds per GB of values produced or read
("broker CPU s/GB", from /proc/<pid>/stat before and after each run, the
median over rounds), and the same for this client process. Runs on other
targets show "-".

--baseline name=/path/to/exactly adds another build of the broker (say, the
binary of the previous release or of main before a change), started and
measured exactly like the managed one, so a change's effect on MB/s and on
broker CPU per GB shows in the same interleaved rounds.

--report file.png (or .svg) draws the table as a chart: MB/s per mode and
target, the median with min–max whiskers over the rounds.

--while-cleaning measures what log compaction costs producers of other
topics: each produce mode runs twice per round, alone and while a
background client writes --cleaning-rate keyed overwrites per second (1000
keys) into a compacted topic of its own (segment.bytes=1048576,
min.cleanable.dirty.ratio=0.01, deleted after the run), the busy run first
in every other round. The comparison "<mode> while cleaning vs alone" is the
median of the per-round ratios; it includes the background writer's own
appends. Next to it: the bytes the writer wrote and, read from the
broker's kafka_log_cleaner_* counters before and after each run, the bytes
the cleaner read and rewrote and its passes, in the busy runs and (what
was left over) in the runs alone. The managed broker is started with
--metrics-listen and log.cleaner.backoff.ms=100 for this; give a
--bootstrap exactly broker's endpoint with --metrics-url name=URL, or its
cleaner activity is reported as not measured.

Every run uses a fresh topic, deleted afterwards. Exit status 1 means a run
failed (the report says which and why).

The load generator must not be what is measured: unless GOGC is set, this
process runs its garbage collector at GOGC=400 (franz-go allocates per
record, and at the default the client's collections showed up as broker
throughput).`,
		Example: `  exactly bench
  exactly bench --modes idempotent,transactional --rounds 5
  exactly bench --modes share-1,share-4,share-16,classic-group --consume-mib 128
  exactly bench --managed --bootstrap kafka=10.0.0.5:9092 --replication-factor 3
  exactly bench --managed --brokers 3 --modes at-least-once,idempotent,transactional
  exactly bench --bootstrap plaintext=127.0.0.1:9092 --bootstrap sasl_ssl=127.0.0.1:9093 \
    --target-config sasl_ssl=client.properties
  exactly bench --bootstrap zstd=127.0.0.1:9092 --bootstrap producer=127.0.0.1:9092 \
    --topic-config zstd/compression.type=zstd --modes idempotent
  exactly bench --kfake --kfake-durable --modes idempotent,transactional,read-committed --report bench.png
  exactly bench --while-cleaning --modes idempotent,transactional --rounds 5
  exactly bench --bootstrap local=127.0.0.1:9092 --metrics-url local=http://127.0.0.1:9308/metrics \
    --while-cleaning --modes idempotent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBench(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.targets, "bootstrap", nil, "a cluster to measure, [name=]host:port[,host:port] (repeatable)")
	fl.StringArrayVar(&f.topicConfigs, "topic-config", nil,
		"a config of every benchmark topic, [target/]key=value, e.g. compression.type=zstd (repeatable)")
	fl.StringArrayVar(&f.targetConfigs, "target-config", nil,
		"name=client.properties: connection settings for that --bootstrap target only, instead of the shared flags (repeatable)")
	fl.BoolVar(&f.whileCleaning, "while-cleaning", false,
		"also run each produce mode beside a background writer that keeps the log cleaner busy on a compacted topic")
	fl.Float64Var(&f.cleaningRate, "cleaning-rate", 5000, "records per second of the --while-cleaning background writer")
	fl.StringArrayVar(&f.metricsURLs, "metrics-url", nil,
		"name=http://host:port/metrics: a --bootstrap target's Prometheus endpoint, read for its cleaner's counters (repeatable)")
	fl.BoolVar(&f.managed, "managed", false, "also measure a broker started here (the default when no --bootstrap is given; --managed=false leaves it out)")
	fl.StringArrayVar(&f.baselines, "baseline", nil,
		"name=/path/to/exactly: also measure another build of the broker, started here like the managed one (repeatable)")
	fl.BoolVar(&f.kfake, "kfake", false, `also measure franz-go's kfake (one broker, in memory) started here, as target "kfake"`)
	fl.BoolVar(&f.kfakeDurable, "kfake-durable", false,
		`also measure kfake persisting to a data directory with an fsync per write, as target "kfake-durable"`)
	fl.StringVar(&f.report, "report", "", "also draw a chart of throughput per mode and target to this PNG (or .svg) file")
	fl.StringVar(&f.modes, "modes", strings.Join(bench.Modes, ","), "modes to measure, comma-separated")
	fl.DurationVar(&f.duration, "duration", 5*time.Second, "length of each produce run")
	fl.IntVar(&f.rounds, "rounds", 3, "how many times each mode runs on each target")
	fl.IntVar(&f.recordSize, "record-size", 1024, "value size in bytes")
	fl.Int32Var(&f.partitions, "partitions", 6, "partitions per benchmark topic")
	fl.Int16Var(&f.replication, "replication-factor", -1, "replication factor of benchmark topics (-1: the cluster's default)")
	fl.IntVar(&f.producers, "producers", 1, "concurrent producer clients")
	fl.DurationVar(&f.txn, "txn-interval", 100*time.Millisecond, "how often the transactional mode commits")
	fl.DurationVar(&f.linger, "linger", time.Millisecond, "producer linger")
	fl.IntVar(&f.buffered, "max-buffered-records", 1<<16, "records each producer may buffer")
	fl.Float64Var(&f.rate, "rate", 0, "records per second per producer (0: as fast as possible)")
	fl.Int64Var(&f.consumeMiB, "consume-mib", 512, "MiB of values in each topic the consume and group modes read")
	fl.IntVar(&f.abortEvery, "abort-every", 10, "abort every n-th transaction of the consume topic (0: none)")
	fl.StringVar(&f.dir, "dir", "", "data directory for the managed broker (default: temporary, removed)")
	fl.IntVar(&f.brokers, "brokers", 1,
		`nodes of the managed broker: above 1, a cluster measured as two targets, "exactly-rf1" and "exactly-rfN" (replication factor N)`)
	fl.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress lines on stderr")
	f.conn.registerSecurity(fl)
	return cmd
}

func runBench(cmd *cobra.Command, f *benchFlags) error {
	cfg := bench.Config{
		// With no --bootstrap the broker started here is the default
		// target, unless --managed=false says otherwise (to measure only
		// kfake or a --baseline build).
		Managed: f.managed || (len(f.targets) == 0 && !cmd.Flags().Changed("managed")), Dir: f.dir,
		Duration: f.duration, Rounds: f.rounds, RecordSize: f.recordSize, Partitions: f.partitions,
		ReplicationFactor: f.replication, Producers: f.producers, TxnInterval: f.txn, Linger: f.linger,
		MaxBufferedRecords: f.buffered, Rate: f.rate, ConsumeBytes: f.consumeMiB << 20, AbortEvery: f.abortEvery,
		WhileCleaning: f.whileCleaning, CleaningRate: f.cleaningRate, KFake: f.kfake, KFakeDurable: f.kfakeDurable,
		Brokers: f.brokers,
	}
	for _, b := range f.baselines {
		name, bin, ok := strings.Cut(b, "=")
		if !ok || name == "" || bin == "" {
			return fmt.Errorf("--baseline %q: want name=/path/to/exactly", b)
		}
		cfg.Baselines = append(cfg.Baselines, bench.Baseline{Name: name, ServeCommand: []string{bin, "serve"}})
	}
	// A long benchmark must not end in a chart nobody can open.
	if ext := strings.ToLower(filepath.Ext(f.report)); f.report != "" && ext != ".png" && ext != ".svg" {
		return fmt.Errorf("--report %s: want a .png or .svg file", f.report)
	}
	for _, m := range strings.Split(f.modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Modes = append(cfg.Modes, m)
		}
	}
	conn, err := f.conn.settings()
	if err != nil {
		return err
	}
	sec, err := targetOpts(conn)
	if err != nil {
		return err
	}
	perTarget, err := parseTargetConfigs(f.targetConfigs)
	if err != nil {
		return err
	}
	topicConfigs, perTargetTopic, err := parseTopicConfigs(f.topicConfigs)
	if err != nil {
		return err
	}
	cfg.TopicConfigs = topicConfigs
	metricsURLs := map[string]string{}
	for _, spec := range f.metricsURLs {
		name, url, ok := strings.Cut(spec, "=")
		if !ok || name == "" || url == "" {
			return fmt.Errorf("--metrics-url %q: want name=http://host:port/metrics", spec)
		}
		metricsURLs[name] = url
	}
	for _, s := range f.targets {
		t, err := bench.ParseTarget(s)
		if err != nil {
			return err
		}
		t.Opts = sec
		if opts, ok := perTarget[t.Name]; ok {
			t.Opts = opts
			delete(perTarget, t.Name)
		}
		if tc, ok := perTargetTopic[t.Name]; ok {
			t.TopicConfigs = tc
			delete(perTargetTopic, t.Name)
		}
		if url, ok := metricsURLs[t.Name]; ok {
			t.MetricsURL = url
			delete(metricsURLs, t.Name)
		}
		cfg.Targets = append(cfg.Targets, t)
	}
	for name := range perTarget {
		return fmt.Errorf("--target-config %s: no --bootstrap target has that name", name)
	}
	for name := range perTargetTopic {
		return fmt.Errorf("--topic-config %s/...: no --bootstrap target has that name", name)
	}
	for name := range metricsURLs {
		return fmt.Errorf("--metrics-url %s=...: no --bootstrap target has that name", name)
	}
	if len(f.targets) == 0 && len(conn.Bootstrap) > 0 {
		cfg.Targets = []bench.Target{{Name: conn.Bootstrap[0], Bootstrap: conn.Bootstrap, Opts: sec}}
		cfg.Managed = f.managed
	}
	for name, v := range map[string]int64{"--duration": int64(f.duration), "--rounds": int64(f.rounds),
		"--record-size": int64(f.recordSize), "--partitions": int64(f.partitions), "--producers": int64(f.producers),
		"--txn-interval": int64(f.txn), "--linger": int64(f.linger), "--max-buffered-records": int64(f.buffered),
		"--consume-mib": f.consumeMiB, "--cleaning-rate": int64(f.cleaningRate)} {
		if v <= 0 {
			return fmt.Errorf("%s must be positive", name)
		}
	}
	if !f.quiet {
		stderr := cmd.ErrOrStderr()
		cfg.Log = func(format string, args ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", args...) }
	}
	silenceUsageOnRun(cmd)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(commandContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.WriteText(out); err != nil {
		return err
	}
	if f.report != "" {
		if err := rep.WriteChart(f.report); err != nil {
			return fmt.Errorf("drawing %s: %w", f.report, err)
		}
	}
	if rep.Failed() {
		return &ExitError{Code: 1}
	}
	return nil
}

// parseTopicConfigs reads each --topic-config [target/]key=value: a
// topic config for every target, or for the named one. Kafka config keys
// have no '/', so a '/' before the first '=' ends a target name.
func parseTopicConfigs(specs []string) (all map[string]string, perTarget map[string]map[string]string, err error) {
	all, perTarget = map[string]string{}, map[string]map[string]string{}
	for _, spec := range specs {
		kv, target := spec, ""
		if before, after, ok := strings.Cut(spec, "/"); ok && !strings.Contains(before, "=") {
			target, kv = before, after
		}
		key, value, ok := strings.Cut(kv, "=")
		if !ok || key == "" || strings.HasPrefix(spec, "/") {
			return nil, nil, fmt.Errorf("--topic-config %q: want [target/]key=value", spec)
		}
		m := all
		if target != "" {
			if perTarget[target] == nil {
				perTarget[target] = map[string]string{}
			}
			m = perTarget[target]
		}
		m[key] = value
	}
	return all, perTarget, nil
}

// parseTargetConfigs reads each --target-config name=file into that
// target's client options. The file's bootstrap.servers, if any, is not
// used: the target's --bootstrap addresses are what is measured.
func parseTargetConfigs(specs []string) (map[string][]kgo.Opt, error) {
	out := make(map[string][]kgo.Opt, len(specs))
	for _, spec := range specs {
		name, file, ok := strings.Cut(spec, "=")
		if !ok || name == "" || file == "" {
			return nil, fmt.Errorf("--target-config %q: want name=client.properties", spec)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("--target-config %s given twice", name)
		}
		s, err := clientconf.Resolve(file, clientconf.Overrides{})
		if err != nil {
			return nil, fmt.Errorf("--target-config %s: %w", name, err)
		}
		if out[name], err = targetOpts(s); err != nil {
			return nil, fmt.Errorf("--target-config %s: %w", name, err)
		}
	}
	return out, nil
}

// targetOpts are the connection options of settings without its seed
// brokers: a target's own --bootstrap addresses are what it dials, and a
// properties file's bootstrap.servers (kgo.SeedBrokers given later wins)
// must not redirect it.
func targetOpts(s clientconf.Settings) ([]kgo.Opt, error) {
	s.Bootstrap = nil
	return s.Opts()
}
