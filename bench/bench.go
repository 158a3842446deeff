package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/freeport"
	"github.com/exactly/exactly/internal/managed"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Mode names, as accepted by Config.Modes and the CLI.
const (
	AtMostOnce      = "at-most-once"
	AtLeastOnce     = "at-least-once"
	Idempotent      = "idempotent"
	IdempotentFlush = "idempotent-flush"
	Transactional   = "transactional"
	ReadUncommitted = "read-uncommitted"
	ReadCommitted   = "read-committed"
)

// Modes lists every mode in the order reports show them.
var Modes = []string{AtMostOnce, AtLeastOnce, Idempotent, IdempotentFlush, Transactional, ReadUncommitted, ReadCommitted,
	Share1, Share4, Share16, ClassicGroup}

// isConsume reports whether mode reads a prefilled topic (no produce
// latency, no background writer).
func isConsume(mode string) bool {
	return mode == ReadUncommitted || mode == ReadCommitted || isGroupConsume(mode)
}

func isIsolationConsume(mode string) bool { return mode == ReadUncommitted || mode == ReadCommitted }

// Target is one cluster to measure.
type Target struct {
	// Name labels the target's rows ("exactly", "kafka-3node", ...).
	Name string
	// Bootstrap are its seed brokers (host:port).
	Bootstrap []string
	// Opts are options every client of this target starts with: TLS,
	// SASL, a dialer (see eos/preset's package example for a SASL_SSL set).
	Opts []kgo.Opt
	// TopicConfigs are set on this target's benchmark topics, over
	// Config.TopicConfigs: two targets naming one cluster with different
	// topic configs (compression.type=zstd and producer) are measured in
	// the same interleaved rounds.
	TopicConfigs map[string]string
	// MetricsURL is the target's Prometheus endpoint (an exactly
	// broker's /metrics), read before and after each run of
	// Config.WhileCleaning to report what the log cleaner did; empty
	// means not measured. A managed broker gets its own.
	MetricsURL string
	// PID is the target's broker process on this machine, whose CPU time
	// is read from /proc before and after each run (Result.BrokerCPU); 0
	// means not measured. Managed and kfake targets get their child's.
	PID int
	// PIDs are more processes of the target (the other nodes of a managed
	// cluster), their CPU time added to PID's.
	PIDs []int
	// ReplicationFactor of this target's benchmark topics, over
	// Config.ReplicationFactor (0: that one): two targets naming one
	// cluster measure RF 3 beside RF 1 in the same interleaved rounds.
	ReplicationFactor int16
}

// replicationFactor is the replication factor of t's benchmark topics.
func (t Target) replicationFactor(cfg Config) int16 {
	if t.ReplicationFactor != 0 {
		return t.ReplicationFactor
	}
	return cfg.ReplicationFactor
}

// clientOpts are the target's seed brokers and connection options,
// followed by opts.
func (t Target) clientOpts(opts ...kgo.Opt) []kgo.Opt {
	all := append([]kgo.Opt{kgo.SeedBrokers(t.Bootstrap...)}, t.Opts...)
	return append(all, opts...)
}

// ParseTarget reads "name=host:port,host:port" or just "host:port,..."
// (then the name is the first address).
func ParseTarget(s string) (Target, error) {
	name, addrs, ok := strings.Cut(s, "=")
	if !ok {
		addrs, name = s, ""
	}
	var seeds []string
	for _, a := range strings.Split(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return Target{}, fmt.Errorf("target %q names no broker address", s)
	}
	if name == "" {
		name = seeds[0]
	}
	return Target{Name: name, Bootstrap: seeds}, nil
}

// Baseline is a broker build to measure beside the managed broker.
type Baseline struct {
	// Name labels its rows.
	Name string
	// ServeCommand is argv that serves it, like Config.ServeCommand
	// (e.g. an older exactly binary and "serve").
	ServeCommand []string
}

// Config is one benchmark: every mode on every target, Rounds times.
type Config struct {
	// Targets are the clusters to measure side by side.
	Targets []Target
	// Managed adds a target named "exactly": an `exactly serve` process
	// started with ServeCommand on a fresh data directory under Dir.
	Managed bool
	// ServeCommand is argv for the broker (default: this binary and
	// "serve").
	ServeCommand []string
	// Baselines are other builds of the broker, each started like the
	// managed one (its own temporary data directory) and measured as a
	// target of its own: a change's effect on MB/s and broker CPU per GB
	// in the same interleaved rounds.
	Baselines []Baseline
	// KFake adds a target named "kfake": franz-go's kfake fake cluster
	// (one broker, its log in memory) in a child process started with
	// KFakeCommand, so a comparison with it needs no setup.
	KFake bool
	// KFakeDurable adds a target named "kfake-durable": kfake persisting
	// to a data directory under Dir with an fsync per written batch.
	KFakeDurable bool
	// KFakeCommand is argv for a kfake broker (default: this binary and
	// "kfake", the hidden `exactly kfake`); "--durable" is added for
	// KFakeDurable.
	KFakeCommand []string
	// Dir holds the managed broker's data (and kfake's, under kfake/ and
	// kfake-durable/); empty means a temporary directory, removed
	// afterwards.
	Dir string
	// Modes to measure; empty means all.
	Modes []string
	// Duration of each produce run (default 5s).
	Duration time.Duration
	// Rounds is how often each mode runs on each target (default 3).
	Rounds int
	// RecordSize is the value size in bytes (default 1024).
	RecordSize int
	// Partitions of each benchmark topic (default 6).
	Partitions int32
	// ReplicationFactor of each benchmark topic; 0 or -1 means the
	// cluster's default.
	ReplicationFactor int16
	// Brokers > 1 makes the managed broker a cluster of that many nodes
	// (each a broker and a controller), measured as two targets:
	// "exactly-rf1" (topics of replication factor 1) and "exactly-rfN"
	// (replication factor Brokers).
	Brokers int
	// Producers is the number of concurrent producer clients (default 1).
	Producers int
	// TxnInterval is how often transactional producers commit (default
	// 100ms, measured from the start of each transaction).
	TxnInterval time.Duration
	// Linger is the producers' linger (default 1ms).
	Linger time.Duration
	// MaxBufferedRecords bounds each producer's buffer (default 65536).
	MaxBufferedRecords int
	// Rate caps each producer at this many records per second; 0 means
	// as fast as the cluster takes them (latency then includes time
	// queued in the client's buffer).
	Rate float64
	// ConsumeBytes is the size of the topic the consume modes read
	// (default 512 MiB of values).
	ConsumeBytes int64
	// AbortEvery makes every AbortEvery-th prefill transaction abort, so
	// read_committed has aborted ranges to skip (the CLI's default is
	// 10); 0 aborts none, leaving the isolation level's bookkeeping (LSO,
	// aborted-transaction lookup) as the only difference.
	AbortEvery int
	// TopicConfigs are set on every benchmark topic (compression.type,
	// max.message.bytes, ...); a target's own TopicConfigs win.
	TopicConfigs map[string]string
	// WhileCleaning runs every produce mode twice per round, once alone
	// and once while a background writer sends keyed overwrites to a
	// compacted topic of its own (1 MiB segments, cleanable at 1% dirt),
	// so the target's log cleaner works throughout the run; the order of
	// the two alternates from round to round. The comparison is the
	// median of the per-round ratios, and what the cleaner did is read
	// from Target.MetricsURL. The difference includes the background
	// writer's own appends, not only the cleaner's work.
	WhileCleaning bool
	// CleaningRate is the background writer's records per second
	// (default 5000), each a key and a RecordSize value.
	CleaningRate float64
	// Log, if set, receives progress lines.
	Log func(format string, args ...any)
}

func (c *Config) defaults() error {
	if len(c.Modes) == 0 {
		c.Modes = Modes
	}
	for _, m := range c.Modes {
		if !slices.Contains(Modes, m) {
			return fmt.Errorf("unknown mode %q (have %s)", m, strings.Join(Modes, ", "))
		}
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.RecordSize <= 0 {
		c.RecordSize = 1024
	}
	if c.Partitions <= 0 {
		c.Partitions = 6
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.Producers <= 0 {
		c.Producers = 1
	}
	if c.TxnInterval <= 0 {
		c.TxnInterval = 100 * time.Millisecond
	}
	if c.Linger < 0 {
		return fmt.Errorf("negative linger %v", c.Linger)
	}
	if c.Linger == 0 {
		c.Linger = time.Millisecond
	}
	if c.MaxBufferedRecords <= 0 {
		c.MaxBufferedRecords = 1 << 16
	}
	if c.AbortEvery < 0 {
		return fmt.Errorf("negative abort interval %d", c.AbortEvery)
	}
	if c.Rate < 0 {
		return fmt.Errorf("negative rate %v", c.Rate)
	}
	if c.CleaningRate < 0 {
		return fmt.Errorf("negative cleaning rate %v", c.CleaningRate)
	}
	if c.CleaningRate == 0 {
		c.CleaningRate = 5000
	}
	if c.WhileCleaning && !slices.ContainsFunc(c.Modes, func(m string) bool { return !isConsume(m) }) {
		return errors.New("measuring while cleaning needs a produce mode")
	}
	if c.ConsumeBytes <= 0 {
		c.ConsumeBytes = 512 << 20
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
	for _, b := range c.Baselines {
		if b.Name == "" || b.Name == "exactly" || len(b.ServeCommand) == 0 {
			return fmt.Errorf("baseline %q: want a name other than exactly and a command", b.Name)
		}
	}
	if !c.Managed && !c.KFake && !c.KFakeDurable && len(c.Targets) == 0 && len(c.Baselines) == 0 {
		return errors.New("nothing to measure: give a target (--bootstrap, --kfake, --kfake-durable or --baseline) or a managed broker (--managed)")
	}
	var err error
	if c.Managed && len(c.ServeCommand) == 0 {
		if c.ServeCommand, err = thisBinary("serve"); err != nil {
			return err
		}
	}
	if (c.KFake || c.KFakeDurable) && len(c.KFakeCommand) == 0 {
		if c.KFakeCommand, err = thisBinary("kfake"); err != nil {
			return err
		}
	}
	return nil
}

// thisBinary is argv for a subcommand of this executable.
func thisBinary(subcommand string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary to start a broker with: %w", err)
	}
	return []string{exe, subcommand}, nil
}

// Result is one run: one mode on one target in one round.
type Result struct {
	Target string `json:"target"`
	Mode   string `json:"mode"`
	Round  int    `json:"round"`
	// Records acknowledged (produce), committed (transactional) or
	// delivered (consume).
	Records int64 `json:"records"`
	// Bytes of values acknowledged or committed; for consume, of every
	// value in the log read (aborted ones too), so both isolation levels
	// divide the same work by their time.
	Bytes   int64         `json:"bytes"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// MBps is Bytes per second in 10^6 bytes.
	MBps          float64 `json:"mb_per_s"`
	RecordsPerSec float64 `json:"records_per_s"`
	// Produce latency (send to acknowledgement) quantiles; zero for
	// consume modes.
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
	// Commits and Aborts count the transactional mode's transactions.
	Commits int `json:"commits,omitempty"`
	Aborts  int `json:"aborts,omitempty"`
	// WhileCleaning marks a run measured with the background writer of
	// Config.WhileCleaning; BackgroundBytes are the keys and values it
	// got acknowledged meanwhile.
	WhileCleaning   bool  `json:"while_cleaning,omitempty"`
	BackgroundBytes int64 `json:"background_bytes,omitempty"`
	// Consumers is the number of group members in a group mode's run.
	Consumers int `json:"consumers,omitempty"`
	// Redelivered counts deliveries, in a group mode's run, of records
	// already delivered in that run (a share record whose lock expired or
	// that was released; a classic partition that moved before its
	// commit); Records counts each record once.
	Redelivered int64 `json:"redelivered,omitempty"`
	// Settled is, for a group mode, how many records the group durably
	// finished by the end of the run: the share-partition start offsets
	// (share groups: every record before it acknowledged), or the
	// committed offsets (classic group). A run where it falls short of the
	// topic fails.
	Settled int64 `json:"settled,omitempty"`
	// Cleaner is what the target's log cleaner did during the run (with
	// Config.WhileCleaning and a Target.MetricsURL; nil otherwise): the
	// runs without the background writer show what was left to clean.
	Cleaner *CleanerActivity `json:"cleaner,omitempty"`
	// BrokerCPU is what the target's process (Target.PID) spent during
	// the run, ClientCPU what this process, the benchmark client, spent:
	// the whole run, topic creation and warm-up included (and, while
	// cleaning, the background writer's and the cleaner's work). nil: not
	// measured (no PID, not Linux, or the run failed).
	BrokerCPU *CPU   `json:"broker_cpu,omitempty"`
	ClientCPU *CPU   `json:"client_cpu,omitempty"`
	Err       string `json:"error,omitempty"`
}

// Summary is one mode on one target over all rounds: medians, and the
// spread of throughput.
type Summary struct {
	Target        string        `json:"target"`
	Mode          string        `json:"mode"`
	WhileCleaning bool          `json:"while_cleaning,omitempty"`
	Runs          int           `json:"runs"`
	Failed        int           `json:"failed"`
	MBps          float64       `json:"median_mb_per_s"`
	MinMBps       float64       `json:"min_mb_per_s"`
	MaxMBps       float64       `json:"max_mb_per_s"`
	RecordsPerSec float64       `json:"median_records_per_s"`
	P50           time.Duration `json:"median_p50_ns"`
	P99           time.Duration `json:"median_p99_ns"`
	// BrokerCPUPerGB and ClientCPUPerGB are the medians of the runs'
	// CPU.PerGB; nil where no run measured it.
	BrokerCPUPerGB *float64 `json:"median_broker_cpu_s_per_gb,omitempty"`
	ClientCPUPerGB *float64 `json:"median_client_cpu_s_per_gb,omitempty"`
}

// Comparison is the per-round median ratio of two modes on one target.
type Comparison struct {
	Target string `json:"target"`
	Mode   string `json:"mode"`
	// Against is the baseline mode.
	Against string `json:"against"`
	// WhileCleaning: Mode was measured with the background writer of
	// Config.WhileCleaning and Against (the same mode) without it.
	// BackgroundBytes and Cleaner sum the paired runs with it, and
	// CleanerQuiet the paired runs without it (nil: not measured).
	WhileCleaning   bool             `json:"while_cleaning,omitempty"`
	BackgroundBytes int64            `json:"background_bytes,omitempty"`
	Cleaner         *CleanerActivity `json:"cleaner,omitempty"`
	CleanerQuiet    *CleanerActivity `json:"cleaner_quiet,omitempty"`
	// Change is the median over rounds of Mode/Against − 1 (−0.05: 5%
	// slower).
	Change float64 `json:"change"`
	// Interval bounds Change's true value (in the same units); nil for
	// fewer than six rounds.
	Interval *Interval `json:"interval,omitempty"`
	Rounds   int       `json:"rounds"`
}

// TargetComparison is one mode on two targets, round by round: the
// first target (the managed broker when there is one) against another.
type TargetComparison struct {
	Mode    string `json:"mode"`
	Target  string `json:"target"`
	Against string `json:"against"`
	// Ratio is the median over rounds of Target's MB/s / Against's.
	Ratio float64 `json:"ratio"`
	// Interval bounds Ratio's true value; nil for fewer than six rounds.
	Interval *Interval `json:"interval,omitempty"`
	// CPURatio is the median over rounds of Target's broker CPU per GB /
	// Against's; nil unless both brokers' CPU was measured.
	CPURatio *float64 `json:"cpu_ratio,omitempty"`
	Rounds   int      `json:"rounds"`
}

// Report is a whole benchmark.
type Report struct {
	Settings    string       `json:"settings"`
	Results     []Result     `json:"results"`
	Summaries   []Summary    `json:"summaries"`
	Comparisons []Comparison `json:"comparisons"`
	// TargetComparisons pair the first target with each other one.
	TargetComparisons []TargetComparison `json:"target_comparisons,omitempty"`
}

// startManaged starts `serve` from argv on dir (a temporary directory,
// removed at stop, when empty) as the target name.
func startManaged(ctx context.Context, cfg Config, name string, argv []string, dir string) (Target, func(), error) {
	temp := false
	if dir == "" {
		d, err := os.MkdirTemp("", "exactly-bench-")
		if err != nil {
			return Target{}, nil, err
		}
		dir, temp = d, true
	}
	removeTemp := func() {
		if temp {
			os.RemoveAll(dir)
		}
	}
	config, metricsURL := []string(nil), ""
	if cfg.WhileCleaning {
		addr, err := freeAddr()
		if err != nil {
			removeTemp()
			return Target{}, nil, err
		}
		argv = append(slices.Clone(argv), "--metrics-listen", addr)
		config = []string{"log.cleaner.backoff.ms=" + CleanerBackoff}
		metricsURL = "http://" + addr + "/metrics"
	}
	br, err := managed.Start(argv, nil, dir, config)
	if err != nil {
		removeTemp()
		return Target{}, nil, err
	}
	stop := func() {
		br.Stop(10 * time.Second)
		removeTemp()
	}
	if metricsURL != "" {
		if err := awaitMetrics(ctx, metricsURL); err != nil {
			stop()
			return Target{}, nil, err
		}
	}
	return Target{Name: name, Bootstrap: []string{br.Addr()}, MetricsURL: metricsURL, PID: br.PID()}, stop, nil
}

// startManagedCluster starts cfg.Brokers nodes of one cluster and returns
// it as two targets: topics of replication factor 1, and of Brokers.
func startManagedCluster(cfg Config) ([]Target, func(), error) {
	dir, temp := cfg.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "exactly-bench-")
		if err != nil {
			return nil, nil, err
		}
		dir, temp = d, true
	}
	c, err := managed.StartCluster(cfg.ServeCommand, nil, dir, cfg.Brokers, nil)
	if err != nil {
		if temp {
			os.RemoveAll(dir)
		}
		return nil, nil, err
	}
	stop := func() {
		c.Stop(10 * time.Second)
		if temp {
			os.RemoveAll(dir)
		}
	}
	pids := c.PIDs()
	t := Target{Bootstrap: c.Addrs(), PID: pids[0], PIDs: pids[1:]}
	rf1, rfN := t, t
	rf1.Name, rf1.ReplicationFactor = "exactly-rf1", 1
	rfN.Name, rfN.ReplicationFactor = fmt.Sprintf("exactly-rf%d", cfg.Brokers), int16(cfg.Brokers)
	return []Target{rf1, rfN}, stop, nil
}

// Run measures every mode on every target, Rounds times, interleaved. A run
// that fails is reported (Result.Err) and left out of the medians; Run
// returns an error only when the benchmark cannot start.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	targets := append([]Target(nil), cfg.Targets...)
	if cfg.KFake || cfg.KFakeDurable {
		kfakes, stop, err := startKFakes(cfg)
		if err != nil {
			return nil, err
		}
		defer stop()
		targets = append(kfakes, targets...)
	}
	// Baselines go after the managed broker, so the table lists "exactly"
	// first and each older build beneath it.
	for i := len(cfg.Baselines) - 1; i >= 0; i-- {
		b := cfg.Baselines[i]
		t, stop, err := startManaged(ctx, cfg, b.Name, b.ServeCommand, "")
		if err != nil {
			return nil, fmt.Errorf("baseline %s: %w", b.Name, err)
		}
		defer stop()
		targets = append([]Target{t}, targets...)
	}
	if cfg.Managed && cfg.Brokers > 1 {
		ts, stop, err := startManagedCluster(cfg)
		if err != nil {
			return nil, err
		}
		defer stop()
		targets = append(ts, targets...)
	} else if cfg.Managed {
		t, stop, err := startManaged(ctx, cfg, "exactly", cfg.ServeCommand, cfg.Dir)
		if err != nil {
			return nil, err
		}
		defer stop()
		targets = append([]Target{t}, targets...)
	}
	rep := &Report{Settings: settings(cfg)}
	value := make([]byte, cfg.RecordSize)
	rand.Read(value)
	runID := strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
	// Topic and transactional-id names carry the target's index: two
	// targets may be one cluster (a PLAINTEXT and a SASL_SSL listener of
	// the same broker, measured side by side).
	targetID := make(map[string]string, len(targets))
	for i, t := range targets {
		targetID[t.Name] = runID + "-t" + strconv.Itoa(i)
	}

	// The consume modes read one prefilled topic per target. A target
	// that cannot be prefilled (one without transactions) fails its
	// consume runs, with the reason, and the others go on.
	consumeTopics := map[string]*prefilled{}
	prefillErrs := map[string]string{}
	if slices.ContainsFunc(cfg.Modes, isIsolationConsume) {
		for _, t := range targets {
			cfg.Log("%s: prefilling %d MiB for the consume modes", t.Name, cfg.ConsumeBytes>>20)
			topic := "exactly-bench-consume-" + targetID[t.Name]
			defer deleteTopic(t, topic)
			p, err := prefill(ctx, cfg, t, topic, value)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				prefillErrs[t.Name] = fmt.Sprintf("prefilling the consume topic: %v", err)
				cfg.Log("%s: %s", t.Name, prefillErrs[t.Name])
				continue
			}
			consumeTopics[t.Name] = p
		}
	}
	// The share modes read one single-partition topic per target, the
	// classic group one of cfg.Partitions partitions.
	shareTopics, classicTopics := map[string]*plainTopic{}, map[string]*plainTopic{}
	for _, want := range []struct {
		modes      func(string) bool
		kind       string
		partitions int32
		into       map[string]*plainTopic
	}{
		{func(m string) bool { return shareConsumers(m) > 0 }, "share", 1, shareTopics},
		{func(m string) bool { return m == ClassicGroup }, "classic", cfg.Partitions, classicTopics},
	} {
		if !slices.ContainsFunc(cfg.Modes, want.modes) {
			continue
		}
		for _, t := range targets {
			cfg.Log("%s: prefilling %d MiB in %d partition(s) for the %s group mode(s)", t.Name, cfg.ConsumeBytes>>20, want.partitions, want.kind)
			p, err := prefillPlain(ctx, cfg, t, "exactly-bench-"+want.kind+"-"+targetID[t.Name], want.partitions, value)
			if err != nil {
				return nil, fmt.Errorf("%s: prefilling the %s topic: %w", t.Name, want.kind, err)
			}
			want.into[t.Name] = p
			defer deleteTopic(t, p.topic)
		}
	}

	type job struct {
		t    Target
		mode string
	}
	var jobs []job
	for _, m := range cfg.Modes {
		for _, t := range targets {
			jobs = append(jobs, job{t, m})
		}
	}
	for round := 0; round < cfg.Rounds; round++ {
		for i := range jobs {
			j := jobs[(i+round)%len(jobs)]
			// With WhileCleaning a produce mode runs alone and busy, back
			// to back so drift hits both alike, the busy run first in
			// every other round.
			busy := []bool{false}
			if cfg.WhileCleaning && !isConsume(j.mode) {
				busy = []bool{round%2 == 1, round%2 == 0}
			}
			for _, cleaning := range busy {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				var res Result
				cpu := startCPU(j.t)
				switch {
				case shareConsumers(j.mode) > 0:
					group := fmt.Sprintf("exactly-bench-%s-%s-%d", targetID[j.t.Name], j.mode, round)
					res = groupConsumeRun(ctx, cfg, j.t, j.mode, group, shareTopics[j.t.Name])
				case j.mode == ClassicGroup:
					group := fmt.Sprintf("exactly-bench-%s-%s-%d", targetID[j.t.Name], j.mode, round)
					res = groupConsumeRun(ctx, cfg, j.t, j.mode, group, classicTopics[j.t.Name])
				case isIsolationConsume(j.mode) && prefillErrs[j.t.Name] != "":
					res = Result{Err: prefillErrs[j.t.Name]}
				case isConsume(j.mode):
					res = consumeRun(ctx, cfg, j.t, j.mode, consumeTopics[j.t.Name])
				default:
					res = measuredProduceRun(ctx, cfg, j.t, j.mode, round, cleaning, targetID[j.t.Name], value)
				}
				cpu.stop(&res)
				res.Target, res.Mode, res.Round = j.t.Name, j.mode, round
				label := j.mode
				if cleaning {
					label += " while cleaning"
				}
				if res.Err != "" {
					cfg.Log("round %d %s %s: %s", round+1, j.t.Name, label, res.Err)
				} else {
					cfg.Log("round %d %s %s: %.1f MB/s%s%s%s", round+1, j.t.Name, label, res.MBps, res.BrokerCPU.logString(), res.Cleaner.logString(), res.redeliveredString())
				}
				rep.Results = append(rep.Results, res)
			}
		}
	}
	rep.summarize(targets, cfg.Modes)
	return rep, nil
}

// measuredProduceRun is one produce run on a fresh topic, deleted
// afterwards; with cleaning, the background writer of Config.WhileCleaning
// runs from before the producers start until after they finish. With
// Config.WhileCleaning and a metrics endpoint, every produce run (busy or
// not) records what the cleaner did meanwhile.
func measuredProduceRun(ctx context.Context, cfg Config, t Target, mode string, round int, cleaning bool, id string, value []byte) Result {
	topic := fmt.Sprintf("exactly-bench-%s-%s-%d", id, mode, round)
	if cleaning {
		topic += "-cleaning"
	}
	defer deleteTopic(t, topic)
	var before CleanerActivity
	measureCleaner := cfg.WhileCleaning && t.MetricsURL != ""
	if measureCleaner {
		var err error
		if before, err = cleanerCounters(ctx, t.MetricsURL); err != nil {
			return Result{Err: fmt.Sprintf("reading the cleaner's metrics: %v", err), WhileCleaning: cleaning}
		}
	}
	var load *cleaningLoad
	if cleaning {
		var err error
		if load, err = startCleaningLoad(ctx, cfg, t, topic+"-compacted", value); err != nil {
			return Result{Err: err.Error(), WhileCleaning: true}
		}
	}
	res := produceRun(ctx, cfg, t, mode, topic, id, value)
	res.WhileCleaning = cleaning
	if load != nil {
		var err error
		res.BackgroundBytes, err = load.stop()
		if err != nil && res.Err == "" {
			res.Err = err.Error()
		}
	}
	if measureCleaner {
		after, err := cleanerCounters(ctx, t.MetricsURL)
		if err != nil {
			if res.Err == "" {
				res.Err = fmt.Sprintf("reading the cleaner's metrics: %v", err)
			}
			return res
		}
		res.Cleaner = &CleanerActivity{Runs: after.Runs - before.Runs,
			BytesRead: after.BytesRead - before.BytesRead, BytesWritten: after.BytesWritten - before.BytesWritten}
	}
	return res
}

func settings(cfg Config) string {
	s := fmt.Sprintf("%d B records, %d partitions, %d producer(s), linger %v, %d buffered records per producer, %d rounds × %v per produce run, transactions every %v",
		cfg.RecordSize, cfg.Partitions, cfg.Producers, cfg.Linger, cfg.MaxBufferedRecords, cfg.Rounds, cfg.Duration, cfg.TxnInterval)
	if cfg.Rate > 0 {
		s += fmt.Sprintf(", at most %.0f records/s per producer", cfg.Rate)
	}
	if len(cfg.TopicConfigs) > 0 {
		s += ", topics with " + topicConfigString(cfg.TopicConfigs)
	}
	for _, t := range cfg.Targets {
		if len(t.TopicConfigs) > 0 {
			s += fmt.Sprintf(", %s's topics with %s", t.Name, topicConfigString(t.TopicConfigs))
		}
	}
	if cfg.WhileCleaning {
		s += fmt.Sprintf(", produce modes also while writing %.0f keyed records/s to a compacted topic (%d keys, %s B segments, min.cleanable.dirty.ratio=0.01)",
			cfg.CleaningRate, cleaningKeys, cleaningSegmentBytes)
	}
	if slices.ContainsFunc(cfg.Modes, isIsolationConsume) {
		s += fmt.Sprintf(", consume modes read %d MiB", cfg.ConsumeBytes>>20)
		if cfg.AbortEvery > 0 {
			s += fmt.Sprintf(" (every %d. transaction aborted)", cfg.AbortEvery)
		}
	}
	if slices.ContainsFunc(cfg.Modes, func(m string) bool { return shareConsumers(m) > 0 }) {
		s += fmt.Sprintf(", share-N: N share consumers read %d MiB from 1 partition, ACCEPTing every record", cfg.ConsumeBytes>>20)
	}
	if slices.Contains(cfg.Modes, ClassicGroup) {
		s += fmt.Sprintf(", classic-group: %d consumers of a classic group read %d MiB from %d partitions, committing after every poll",
			cfg.Partitions, cfg.ConsumeBytes>>20, cfg.Partitions)
	}
	if slices.ContainsFunc(cfg.Modes, isGroupConsume) {
		s += " (group modes: timed from the moment every consumer has its assignment)"
	}
	return s
}

// topicConfigString renders topic configs as sorted key=value pairs.
func topicConfigString(m map[string]string) string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return strings.Join(kv, " ")
}

func (rep *Report) summarize(targets []Target, modes []string) {
	for _, m := range modes {
		for _, t := range targets {
			for _, cleaning := range []bool{false, true} {
				if s, ok := rep.summary(t.Name, m, cleaning); ok {
					rep.Summaries = append(rep.Summaries, s)
				}
			}
		}
	}
	for _, pair := range [][2]string{{Transactional, Idempotent}, {Transactional, IdempotentFlush}, {IdempotentFlush, Idempotent}, {ReadCommitted, ReadUncommitted},
		{Share1, ClassicGroup}, {Share4, ClassicGroup}, {Share16, ClassicGroup}} {
		for _, t := range targets {
			var ratios []float64
			for _, a := range rep.Results {
				if a.Target != t.Name || a.Mode != pair[0] || a.Err != "" || a.WhileCleaning {
					continue
				}
				for _, b := range rep.Results {
					if b.Target == t.Name && b.Mode == pair[1] && b.Round == a.Round && b.Err == "" && b.MBps > 0 && !b.WhileCleaning {
						ratios = append(ratios, a.MBps/b.MBps-1)
					}
				}
			}
			if len(ratios) > 0 {
				rep.Comparisons = append(rep.Comparisons, Comparison{Target: t.Name, Mode: pair[0], Against: pair[1],
					Change: median(ratios), Interval: medianInterval(ratios), Rounds: len(ratios)})
			}
		}
	}
	for _, m := range modes {
		for _, t := range targets {
			if c, ok := rep.cleaningComparison(t.Name, m); ok {
				rep.Comparisons = append(rep.Comparisons, c)
			}
		}
	}
	if len(targets) > 1 {
		for _, m := range modes {
			for _, other := range targets[1:] {
				if c, ok := rep.targetComparison(m, targets[0].Name, other.Name); ok {
					rep.TargetComparisons = append(rep.TargetComparisons, c)
				}
			}
		}
	}
}

// targetComparison pairs the rounds of mode on target a and target b
// (runs alone, not while cleaning); ok is false when no round has both.
func (rep *Report) targetComparison(mode, a, b string) (TargetComparison, bool) {
	c := TargetComparison{Mode: mode, Target: a, Against: b}
	var ratios, cpu []float64
	for _, x := range rep.Results {
		if x.Target != a || x.Mode != mode || x.Err != "" || x.WhileCleaning || x.MBps <= 0 {
			continue
		}
		for _, y := range rep.Results {
			if y.Target != b || y.Mode != mode || y.Round != x.Round || y.Err != "" || y.WhileCleaning || y.MBps <= 0 {
				continue
			}
			ratios = append(ratios, x.MBps/y.MBps)
			if x.BrokerCPU != nil && y.BrokerCPU != nil && y.BrokerCPU.PerGB > 0 {
				cpu = append(cpu, x.BrokerCPU.PerGB/y.BrokerCPU.PerGB)
			}
		}
	}
	if len(ratios) == 0 {
		return c, false
	}
	c.Ratio, c.Interval, c.Rounds = median(ratios), medianInterval(ratios), len(ratios)
	if len(cpu) == len(ratios) {
		r := median(cpu)
		c.CPURatio = &r
	}
	return c, true
}

// summary is one mode on one target, with or without the background
// writer; ok is false when no such run exists.
func (rep *Report) summary(target, mode string, cleaning bool) (s Summary, ok bool) {
	s = Summary{Target: target, Mode: mode, WhileCleaning: cleaning}
	var mbps, rps, p50, p99 []float64
	for _, r := range rep.Results {
		if r.Target != target || r.Mode != mode || r.WhileCleaning != cleaning {
			continue
		}
		s.Runs++
		if r.Err != "" {
			s.Failed++
			continue
		}
		mbps = append(mbps, r.MBps)
		rps = append(rps, r.RecordsPerSec)
		p50 = append(p50, float64(r.P50))
		p99 = append(p99, float64(r.P99))
	}
	s.BrokerCPUPerGB = medianCPU(rep.Results, target, mode, cleaning, func(r Result) *CPU { return r.BrokerCPU })
	s.ClientCPUPerGB = medianCPU(rep.Results, target, mode, cleaning, func(r Result) *CPU { return r.ClientCPU })
	if len(mbps) > 0 {
		s.MBps, s.RecordsPerSec = median(mbps), median(rps)
		s.MinMBps, s.MaxMBps = slices.Min(mbps), slices.Max(mbps)
		s.P50, s.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	}
	// Every mode has a row without the background writer, even if all
	// its runs failed; the row with it exists only with WhileCleaning.
	return s, s.Runs > 0 || !cleaning
}

// cleaningComparison pairs each round's run of mode on target with the
// background writer against the one without it.
func (rep *Report) cleaningComparison(target, mode string) (Comparison, bool) {
	c := Comparison{Target: target, Mode: mode, Against: mode, WhileCleaning: true}
	var ratios []float64
	measured := true
	busy, quiet := &CleanerActivity{}, &CleanerActivity{}
	for _, a := range rep.Results {
		if a.Target != target || a.Mode != mode || !a.WhileCleaning || a.Err != "" {
			continue
		}
		for _, b := range rep.Results {
			if b.Target != target || b.Mode != mode || b.WhileCleaning || b.Round != a.Round || b.Err != "" || b.MBps <= 0 {
				continue
			}
			ratios = append(ratios, a.MBps/b.MBps-1)
			c.BackgroundBytes += a.BackgroundBytes
			if a.Cleaner == nil || b.Cleaner == nil {
				measured = false
				continue
			}
			busy.add(a.Cleaner)
			quiet.add(b.Cleaner)
		}
	}
	if len(ratios) == 0 {
		return Comparison{}, false
	}
	c.Change, c.Interval, c.Rounds = median(ratios), medianInterval(ratios), len(ratios)
	if measured {
		c.Cleaner, c.CleanerQuiet = busy, quiet
	}
	return c, true
}

func createTopic(ctx context.Context, cfg Config, t Target, topic string) error {
	return createTopicWith(ctx, cfg, t, topic, cfg.Partitions)
}

// createTopicWith creates topic with the given partitions and the
// configured topic configs.
func createTopicWith(ctx context.Context, cfg Config, t Target, topic string, partitions int32) error {
	cl, err := kgo.NewClient(t.clientOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	configs := map[string]*string{}
	for _, m := range []map[string]string{cfg.TopicConfigs, t.TopicConfigs} {
		for k, v := range m {
			configs[k] = &v
		}
	}
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, t.replicationFactor(cfg), configs, topic)
	if err != nil {
		return err
	}
	return resp.Err
}

// deleteTopic removes a run's topic so a long benchmark does not fill the
// target's disk; failures are ignored (the topic name says what it was).
func deleteTopic(t Target, topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(t.clientOpts()...)
	if err != nil {
		return
	}
	defer cl.Close()
	kadm.NewClient(cl).DeleteTopics(ctx, topic)
}

// awaitMetrics waits for a just-started broker's metrics endpoint, which
// may open a moment after its Kafka listener.
func awaitMetrics(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cleanerCounters(ctx, url)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the managed broker's metrics: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr is a loopback address free a moment ago, for the managed
// broker's metrics listener (see package freeport).
func freeAddr() (string, error) { return freeport.Addr() }
