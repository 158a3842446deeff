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
var Modes = []string{AtMostOnce, AtLeastOnce, Idempotent, IdempotentFlush, Transactional, ReadUncommitted, ReadCommitted}

func isConsume(mode string) bool { return mode == ReadUncommitted || mode == ReadCommitted }

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
	// Dir holds the managed broker's data; empty means a temporary
	// directory, removed afterwards.
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
	if c.ConsumeBytes <= 0 {
		c.ConsumeBytes = 512 << 20
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
	if !c.Managed && len(c.Targets) == 0 {
		return errors.New("nothing to measure: give a target (--bootstrap) or a managed broker")
	}
	if c.Managed && len(c.ServeCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this binary to start a broker with: %w", err)
		}
		c.ServeCommand = []string{exe, "serve"}
	}
	return nil
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
	Commits int    `json:"commits,omitempty"`
	Aborts  int    `json:"aborts,omitempty"`
	Err     string `json:"error,omitempty"`
}

// Summary is one mode on one target over all rounds: medians, and the
// spread of throughput.
type Summary struct {
	Target        string        `json:"target"`
	Mode          string        `json:"mode"`
	Runs          int           `json:"runs"`
	Failed        int           `json:"failed"`
	MBps          float64       `json:"median_mb_per_s"`
	MinMBps       float64       `json:"min_mb_per_s"`
	MaxMBps       float64       `json:"max_mb_per_s"`
	RecordsPerSec float64       `json:"median_records_per_s"`
	P50           time.Duration `json:"median_p50_ns"`
	P99           time.Duration `json:"median_p99_ns"`
}

// Comparison is the per-round median ratio of two modes on one target.
type Comparison struct {
	Target string `json:"target"`
	Mode   string `json:"mode"`
	// Against is the baseline mode.
	Against string `json:"against"`
	// Change is the median over rounds of Mode/Against − 1 (−0.05: 5%
	// slower).
	Change float64 `json:"change"`
	Rounds int     `json:"rounds"`
}

// Report is a whole benchmark.
type Report struct {
	Settings    string       `json:"settings"`
	Results     []Result     `json:"results"`
	Summaries   []Summary    `json:"summaries"`
	Comparisons []Comparison `json:"comparisons"`
}

// Run measures every mode on every target, Rounds times, interleaved. A run
// that fails is reported (Result.Err) and left out of the medians; Run
// returns an error only when the benchmark cannot start.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	targets := append([]Target(nil), cfg.Targets...)
	if cfg.Managed {
		dir, temp := cfg.Dir, false
		if dir == "" {
			d, err := os.MkdirTemp("", "exactly-bench-")
			if err != nil {
				return nil, err
			}
			dir, temp = d, true
		}
		br, err := managed.Start(cfg.ServeCommand, nil, dir, nil)
		if err != nil {
			return nil, err
		}
		defer func() {
			br.Stop(10 * time.Second)
			if temp {
				os.RemoveAll(dir)
			}
		}()
		targets = append([]Target{{Name: "exactly", Bootstrap: []string{br.Addr()}}}, targets...)
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

	// The consume modes read one prefilled topic per target.
	consumeTopics := map[string]*prefilled{}
	if slices.ContainsFunc(cfg.Modes, isConsume) {
		for _, t := range targets {
			cfg.Log("%s: prefilling %d MiB for the consume modes", t.Name, cfg.ConsumeBytes>>20)
			p, err := prefill(ctx, cfg, t, "exactly-bench-consume-"+targetID[t.Name], value)
			if err != nil {
				return nil, fmt.Errorf("%s: prefilling the consume topic: %w", t.Name, err)
			}
			consumeTopics[t.Name] = p
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
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			j := jobs[(i+round)%len(jobs)]
			var res Result
			if isConsume(j.mode) {
				res = consumeRun(ctx, cfg, j.t, j.mode, consumeTopics[j.t.Name])
			} else {
				id := targetID[j.t.Name]
				topic := fmt.Sprintf("exactly-bench-%s-%s-%d", id, j.mode, round)
				res = produceRun(ctx, cfg, j.t, j.mode, topic, id, value)
				deleteTopic(j.t, topic)
			}
			res.Target, res.Mode, res.Round = j.t.Name, j.mode, round
			if res.Err != "" {
				cfg.Log("round %d %s %s: %s", round+1, j.t.Name, j.mode, res.Err)
			} else {
				cfg.Log("round %d %s %s: %.1f MB/s", round+1, j.t.Name, j.mode, res.MBps)
			}
			rep.Results = append(rep.Results, res)
		}
	}
	rep.summarize(targets, cfg.Modes)
	return rep, nil
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
	if slices.ContainsFunc(cfg.Modes, isConsume) {
		s += fmt.Sprintf(", consume modes read %d MiB", cfg.ConsumeBytes>>20)
		if cfg.AbortEvery > 0 {
			s += fmt.Sprintf(" (every %d. transaction aborted)", cfg.AbortEvery)
		}
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
			s := Summary{Target: t.Name, Mode: m}
			var mbps, rps, p50, p99 []float64
			for _, r := range rep.Results {
				if r.Target != t.Name || r.Mode != m {
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
			if len(mbps) > 0 {
				s.MBps, s.RecordsPerSec = median(mbps), median(rps)
				s.MinMBps, s.MaxMBps = slices.Min(mbps), slices.Max(mbps)
				s.P50, s.P99 = time.Duration(median(p50)), time.Duration(median(p99))
			}
			rep.Summaries = append(rep.Summaries, s)
		}
	}
	for _, pair := range [][2]string{{Transactional, Idempotent}, {Transactional, IdempotentFlush}, {IdempotentFlush, Idempotent}, {ReadCommitted, ReadUncommitted}} {
		for _, t := range targets {
			var ratios []float64
			for _, a := range rep.Results {
				if a.Target != t.Name || a.Mode != pair[0] || a.Err != "" {
					continue
				}
				for _, b := range rep.Results {
					if b.Target == t.Name && b.Mode == pair[1] && b.Round == a.Round && b.Err == "" && b.MBps > 0 {
						ratios = append(ratios, a.MBps/b.MBps-1)
					}
				}
			}
			if len(ratios) > 0 {
				rep.Comparisons = append(rep.Comparisons, Comparison{Target: t.Name, Mode: pair[0], Against: pair[1], Change: median(ratios), Rounds: len(ratios)})
			}
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func createTopic(ctx context.Context, cfg Config, t Target, topic string) error {
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
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, cfg.Partitions, cfg.ReplicationFactor, configs, topic)
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
