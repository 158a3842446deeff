package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/exactly/exactly/clientconf"

	"github.com/exactly/exactly/internal/managed"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a run. Zero fields take the documented defaults.
type Config struct {
	// Mode picks the default client configuration and the promise the
	// history is checked against.
	Mode Mode
	// ProducerOverrides and ConsumerOverrides are key=value settings
	// applied over the mode's profile (Profile.Apply).
	ProducerOverrides, ConsumerOverrides []string
	// Faults are the faults to inject; nil injects none.
	Faults []FaultKind
	// Duration is how long the workload runs (default 30s).
	Duration time.Duration
	// Drain bounds everything after Duration: healing faults, stopping
	// producers, letting the pipeline catch up, stopping it, the final
	// reads (default 30s). A run ends within Duration + Drain plus the
	// managed broker's start and shutdown (a few seconds).
	Drain time.Duration
	// Seed makes the fault schedule and the workers' choices
	// reproducible.
	Seed int64
	// Managed starts a broker (ServeCommand) on a temporary directory and
	// enables broker kills. Otherwise Bootstrap names the cluster.
	Managed bool
	// Brokers > 1 makes the managed broker a cluster of that many nodes
	// (each a broker and a controller); the topics then get replication
	// factor min(Brokers, 3) and min.insync.replicas 2, and broker kills
	// and pauses hit one node each (ClusterFaults add pauses and
	// whole-cluster kills).
	Brokers int
	// Bootstrap is the external cluster's bootstrap list.
	Bootstrap []string
	// Security is how clients reach the external cluster (TLS, SASL); its
	// Bootstrap is ignored. The fault proxy terminates TLS: workers speak
	// to it on loopback without TLS, their SASL exchange passes through,
	// and the proxy dials the brokers with TLS and any client
	// certificate. The password reaches workers in their environment.
	Security clientconf.Settings
	// Producers and Pipelines are the numbers of process slots (default 2
	// each).
	Producers, Pipelines int
	// Partitions is the partition count of both topics (default 3).
	Partitions int32
	// Rate is the producers' total records per second (default 1000; a
	// negative rate is unlimited).
	Rate float64
	// StaticMembership gives pipeline workers group.instance.id (default
	// true via DefaultConfig; a restarted worker takes its predecessor's
	// place without a rebalance, and a zombie is fenced).
	StaticMembership bool
	// Dir keeps the run's files (histories, logs, broker data). Empty: a
	// temporary directory, removed unless the run failed or KeepDir.
	Dir string
	// KeepDir keeps a temporary Dir.
	KeepDir bool
	// WorkerCommand starts a worker when followed by --spec JSON (default:
	// this executable with "verify worker").
	WorkerCommand []string
	// ServeCommand starts a broker when followed by serve flags (default:
	// this executable with "serve").
	ServeCommand []string
	// Env is added to the environment of every process started.
	Env []string
	// Progress, if set, is called a few times a second.
	Progress func(Progress)
	// Log receives a human-readable account of the run.
	Log io.Writer
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig(m Mode) Config {
	return Config{Mode: m, Duration: 30 * time.Second, Drain: 30 * time.Second, Producers: 2, Pipelines: 2,
		Partitions: 3, Rate: 1000, StaticMembership: true}
}

// Progress is a snapshot of a running run.
type Progress struct {
	// Phase is "setup", "running", "draining", "checking" or "done".
	Phase string
	// Elapsed is the time since the workload started, of Duration.
	Elapsed, Duration time.Duration
	// Sent, Acked, Polled and Produced sum every worker's counters.
	Sent, Acked, Polled, Produced int64
	// Faults counts faults injected so far.
	Faults int
	// LastFault describes the latest fault.
	LastFault string
}

// Sample is one second of a run's timeline.
type Sample struct {
	// Second is the second since the workload started.
	Second int `json:"s"`
	// Acked counts input records acknowledged in that second.
	Acked int `json:"acked"`
	// Processed counts output records acknowledged in that second.
	Processed int `json:"processed"`
}

// Report is a run's outcome: the checker's Result plus how the run went.
type Report struct {
	Result
	// Seed is the run's seed.
	Seed int64 `json:"seed"`
	// Profile is the client configuration that ran.
	Profile string `json:"profile"`
	// Faults are the fault kinds the schedule drew from.
	Faults []FaultKind `json:"faults"`
	// Schedule is the fault schedule drawn from the seed.
	Schedule []Fault `json:"schedule,omitempty"`
	// FaultsInjected counts faults actually injected.
	FaultsInjected int `json:"faults_injected"`
	// DurationSeconds is the workload's length.
	DurationSeconds float64 `json:"duration_s"`
	// ElapsedSeconds is the whole run's, drain included.
	ElapsedSeconds float64 `json:"elapsed_s"`
	// Throughput is acknowledged input records per second of workload.
	Throughput float64 `json:"throughput"`
	// ProcessedPerSecond is delivered records per second of workload.
	ProcessedPerSecond float64 `json:"processed_per_s"`
	// Drained is true when the pipeline caught up before the drain ended.
	Drained bool `json:"drained"`
	// Proxy counts what the fault proxy did.
	Proxy ProxyStats `json:"proxy"`
	// Links counts what the links between a managed cluster's nodes did
	// (nil without a cluster).
	Links *LinkStats `json:"links,omitempty"`
	// Timeline holds per-second counts, for charts.
	Timeline []Sample `json:"timeline,omitempty"`
	// Dir is where the run's files were kept, if they were.
	Dir string `json:"dir,omitempty"`
	// Notes are things worth knowing about the run.
	Notes []string `json:"notes,omitempty"`
}

// runner is one run: Run and run orchestrate it here; the supervisor
// (supervisor.go), the nemesis (nemesis.go) and the drain (drain.go) share
// its state under mu.
type runner struct {
	cfg      Config
	profile  Profile
	dir      string
	histDir  string
	logDir   string
	runID    string
	in, out  string
	group    string
	proxy    *Proxy
	broker   *managed.Broker
	cluster  *managed.Cluster // instead of broker, with Config.Brokers > 1
	links    *Links           // between the cluster's nodes
	upstream []string
	admin    *kgo.Client
	rec      *Recorder
	logw     io.Writer
	// shareLimit is the broker's delivery-count limit (share mode).
	shareLimit int32

	mu sync.Mutex
	// The supervisor's: every slot, and every instance ever started.
	slots     []*slot
	instances []*instance
	// The nemesis's: rebalance joiners started, faults injected, and the
	// network faults in force (by schedule index).
	extraN    int
	faults    int
	lastFault string
	dropOn    map[int]float64
	delayOn   map[int]time.Duration
	// nodeDelayOn are the node-delay windows in force, by fault index.
	nodeDelayOn map[int]time.Duration
	phase       string
	start       time.Time
	notes       []string
	// brokerMu serializes broker kills.
	brokerMu sync.Mutex
}

func (r *runner) logf(format string, args ...any) {
	if r.logw != nil {
		fmt.Fprintf(r.logw, "%7.2fs ", time.Since(r.start).Seconds())
		fmt.Fprintf(r.logw, format+"\n", args...)
	}
}

// SetupError is returned for failures that are not a verdict: the broker
// did not start, a topic could not be created, the final read failed.
type SetupError struct {
	// Err is what went wrong.
	Err error
}

// Error returns the cause's message.
func (e *SetupError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *SetupError) Unwrap() error { return e.Err }

func setupErr(format string, args ...any) error {
	return &SetupError{Err: fmt.Errorf(format, args...)}
}

// Run runs one workload under faults, rereads both topics, checks the
// history and reports. Errors are *SetupError: the run could not be
// measured. A violated guarantee is not an error; see Report.OK.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	def := DefaultConfig(cfg.Mode)
	if cfg.Duration <= 0 {
		cfg.Duration = def.Duration
	}
	if cfg.Drain <= 0 {
		cfg.Drain = def.Drain
	}
	if cfg.Producers <= 0 {
		cfg.Producers = def.Producers
	}
	if cfg.Pipelines <= 0 {
		cfg.Pipelines = def.Pipelines
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = def.Partitions
	}
	if cfg.Rate == 0 {
		cfg.Rate = def.Rate
	}
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, &SetupError{err}
	}
	profile := DefaultProfile(cfg.Mode)
	if err := profile.Apply(cfg.ProducerOverrides, cfg.ConsumerOverrides); err != nil {
		return nil, &SetupError{err}
	}
	if !cfg.Managed && len(cfg.Bootstrap) == 0 {
		return nil, setupErr("need --managed or --bootstrap")
	}
	for _, f := range cfg.Faults {
		if f == FaultBrokerKill && !cfg.Managed {
			return nil, setupErr("fault %s needs a managed broker", f)
		}
		if slices.Contains(ClusterFaults, f) && (!cfg.Managed || cfg.Brokers < 2) {
			return nil, setupErr("fault %s needs a managed cluster (--managed --brokers 3)", f)
		}
	}
	if profile.Consumer.Commit == CommitShare && cfg.Managed && cfg.Brokers > 1 {
		return nil, setupErr("share mode on a managed cluster would measure nothing: exactly's share coordinator " +
			"serves only the partitions its own node leads (a known gap of its clusters), so records of the other " +
			"nodes' partitions are never delivered; use --brokers 1, or --bootstrap a cluster serving share groups on every node")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, &SetupError{err}
	}
	if len(cfg.WorkerCommand) == 0 {
		cfg.WorkerCommand = []string{exe, "verify", "worker"}
	}
	if len(cfg.ServeCommand) == 0 {
		cfg.ServeCommand = []string{exe, "serve"}
	}

	r := &runner{cfg: cfg, profile: profile, logw: cfg.Log, start: time.Now(), phase: "setup",
		dropOn: map[int]float64{}, delayOn: map[int]time.Duration{}, nodeDelayOn: map[int]time.Duration{}}
	temp := cfg.Dir == ""
	if temp {
		if r.dir, err = os.MkdirTemp("", "exactly-verify-"); err != nil {
			return nil, &SetupError{err}
		}
	} else {
		r.dir = cfg.Dir
	}
	r.histDir, r.logDir = filepath.Join(r.dir, "history"), filepath.Join(r.dir, "logs")
	for _, d := range []string{r.histDir, r.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, &SetupError{err}
		}
	}
	rep, err := r.run(ctx)
	if r.broker != nil {
		r.broker.Stop(5 * time.Second)
	}
	if r.cluster != nil {
		r.cluster.Stop(10 * time.Second)
	}
	if r.links != nil {
		r.links.Close()
	}
	keep := cfg.KeepDir || !temp || err != nil || (rep != nil && !rep.OK)
	if keep {
		if rep != nil {
			rep.Dir = r.dir
		}
	} else {
		os.RemoveAll(r.dir)
	}
	return rep, err
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	r.runID = strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
	r.in, r.out = "verify-"+r.runID+"-in", "verify-"+r.runID+"-out"
	r.group = "verify-" + r.runID
	var err error
	if r.rec, err = CreateRecorder(filepath.Join(r.histDir, "verify.jsonl"), "verify"); err != nil {
		return nil, &SetupError{err}
	}
	recClosed := false
	defer func() {
		if !recClosed {
			r.rec.Close()
		}
	}()

	if cfg.Managed {
		r.logf("starting a broker: %v", cfg.ServeCommand)
		brokerConfig := managedConfig
		if r.share() {
			brokerConfig = append(append([]string(nil), managedConfig...), shareManagedConfig...)
		}
		if cfg.Brokers > 1 {
			// Node-to-node traffic goes through links of the verifier's,
			// for the network faults between nodes.
			r.links = NewLinks(cfg.Seed)
			if r.cluster, err = managed.StartClusterWith(cfg.ServeCommand, cfg.Env, r.dir, cfg.Brokers,
				managed.ClusterOptions{Config: brokerConfig, Link: r.links.Add}); err != nil {
				return nil, &SetupError{err}
			}
			r.upstream = r.cluster.Addrs()
		} else {
			if r.broker, err = managed.Start(cfg.ServeCommand, cfg.Env, r.dir, brokerConfig); err != nil {
				return nil, &SetupError{err}
			}
			r.upstream = []string{r.broker.Addr()}
		}
	} else {
		r.upstream = cfg.Bootstrap
	}
	sec := cfg.Security
	sec.Bootstrap, sec.ClientID = nil, ""
	secOpts, err := sec.Opts()
	if err != nil {
		return nil, &SetupError{err}
	}
	upTLS, err := sec.TLSConfig()
	if err != nil {
		return nil, &SetupError{err}
	}
	if r.proxy, err = NewProxyTLS(r.upstream, cfg.Seed, upTLS); err != nil {
		return nil, &SetupError{err}
	}
	defer r.proxy.Close()
	adminOpts := append([]kgo.Opt{kgo.SeedBrokers(r.upstream...), kgo.ClientID("verify"),
		kgo.MetadataMinAge(250 * time.Millisecond), kgo.RetryTimeout(20 * time.Second), kgo.AlwaysRetryEOF()}, secOpts...)
	if r.admin, err = kgo.NewClient(adminOpts...); err != nil {
		return nil, &SetupError{err}
	}
	defer r.admin.Close()
	if err := r.createTopics(ctx); err != nil {
		return nil, &SetupError{err}
	}
	runValues := []string{r.out, fmt.Sprintf("seed=%d", cfg.Seed), "profile: " + r.profile.String()}
	if r.share() {
		if err := r.setupShare(ctx); err != nil {
			return nil, &SetupError{err}
		}
		runValues = append(runValues, fmt.Sprintf("%s=%d", shareLimitKey, r.shareLimit))
	}
	r.rec.Record(Event{Type: EvRun, Topic: r.in, Detail: string(cfg.Mode), Values: runValues})

	schedule := NewSchedule(ScheduleOptions{Seed: cfg.Seed, Duration: cfg.Duration, Kinds: cfg.Faults,
		Producers: cfg.Producers, Pipelines: cfg.Pipelines, Brokers: cfg.Brokers})
	for i := 0; i < cfg.Producers; i++ {
		r.slots = append(r.slots, &slot{name: fmt.Sprintf("p%d", i), role: RoleProducer})
	}
	for i := 0; i < cfg.Pipelines; i++ {
		r.slots = append(r.slots, &slot{name: fmt.Sprintf("c%d", i), role: RolePipeline})
	}

	r.mu.Lock()
	r.start = time.Now()
	r.phase = "running"
	r.mu.Unlock()
	for _, s := range r.slots {
		if err := r.startSlot(s); err != nil {
			r.killAll()
			return nil, &SetupError{err}
		}
	}
	r.logf("workload started: mode %s, %s, %d producers, %d pipeline workers, %d partitions, seed %d",
		cfg.Mode, r.profile, cfg.Producers, cfg.Pipelines, cfg.Partitions, cfg.Seed)

	superCtx, stopSuper := context.WithCancel(ctx)
	var superWG sync.WaitGroup
	superWG.Add(2)
	go func() { defer superWG.Done(); r.supervise(superCtx) }()
	go func() { defer superWG.Done(); r.report(superCtx) }()
	defer func() { stopSuper(); superWG.Wait(); r.killAll() }()

	healed := r.runSchedule(ctx, schedule)
	// Everything after the workload, healing included, counts against the
	// drain bound.
	durEnd := r.start.Add(cfg.Duration)
	r.setPhase("draining")
	healed() // every fault heals itself when the workload ends
	if ctx.Err() != nil {
		return nil, setupErr("interrupted")
	}

	deadline := durEnd.Add(cfg.Drain)
	drained, target := r.drain(ctx, durEnd)
	stopSuper()
	superWG.Wait()
	r.killAll()

	// Final reads, direct to the cluster.
	r.setPhase("checking")
	if min := time.Now().Add(5 * time.Second); deadline.Before(min) {
		deadline = min // the final reads always get a few seconds
	}
	fctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	r.mu.Lock()
	notes := append([]string(nil), r.notes...)
	r.mu.Unlock()
	for _, t := range []string{r.in, r.out} {
		fr, err := ReadTopic(fctx, r.admin, t, true)
		if err != nil {
			return nil, setupErr("final read of %s: %v", t, err)
		}
		for p, end := range fr.End {
			if hw := fr.HighWatermark[p]; hw > end {
				notes = append(notes, fmt.Sprintf("%s/%d: last stable offset %d below high watermark %d at the end (an open transaction)", t, p, end, hw))
			}
		}
		for _, e := range fr.Events("final") {
			r.rec.Record(e)
		}
	}
	var ge Event
	if r.share() {
		if ge, err = r.shareFinal(fctx); err != nil {
			return nil, &SetupError{err}
		}
	} else {
		// The group coordinator may be loading after a broker kill that
		// healed moments ago: retriable errors are waited out until the
		// final reads' deadline.
		var offs kadm.OffsetResponses
		err := untilSettled(fctx, func() (err error) {
			offs, err = kadm.NewClient(r.admin).FetchOffsets(fctx, r.group)
			return err
		})
		if err != nil {
			return nil, setupErr("fetching the group's offsets: %v", err)
		}
		ge = Event{Type: EvGroupOffsets, Commits: map[string]map[int32]int64{r.in: {}}}
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == r.in && o.Err == nil {
				ge.Commits[r.in][o.Partition] = o.At
			}
		})
	}
	r.rec.Record(ge)
	if !drained {
		what := "the pipeline had not caught up"
		if r.share() {
			what = "the share group had not settled every record"
		}
		notes = append(notes, fmt.Sprintf("%s when the drain ended (target %v, reached %v)", what, target, ge.Commits[r.in]))
	}
	recClosed = true
	if err := r.rec.Close(); err != nil {
		return nil, &SetupError{err}
	}

	h, err := ReadHistoryDir(r.histDir)
	if err != nil {
		return nil, &SetupError{err}
	}
	if f, err := os.Create(filepath.Join(r.dir, "history.jsonl")); err == nil {
		WriteHistory(f, h)
		f.Close()
	}
	res := Check(h, CheckOptions{InTopic: r.in, OutTopic: r.out, Promise: cfg.Mode, DeliveryLimit: r.shareLimit})
	rep := &Report{
		Result: res, Seed: cfg.Seed, Profile: r.profile.String(), Faults: cfg.Faults, Schedule: schedule,
		FaultsInjected: r.faults, DurationSeconds: cfg.Duration.Seconds(),
		ElapsedSeconds: time.Since(r.start).Seconds(), Drained: drained, Proxy: r.proxy.Stats(), Links: r.linkStats(), Notes: notes,
	}
	if rep.Faults == nil {
		rep.Faults = []FaultKind{}
	}
	rep.Throughput = round1(float64(res.Acked) / cfg.Duration.Seconds())
	rep.ProcessedPerSecond = round1(float64(res.Consumed) / cfg.Duration.Seconds())
	rep.Timeline = timeline(h, r.start, r.in, r.out, cfg.Duration)
	r.setPhase("done")
	r.logf("checked: ok=%v violations=%v", res.OK, res.Violations)
	return rep, nil
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// note records something a reader of the report should know.
func (r *runner) note(format string, args ...any) {
	r.mu.Lock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *runner) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
	r.progress()
}

func (r *runner) createTopics(ctx context.Context) error {
	rf := int16(-1)
	var configs map[string]*string
	switch {
	case r.cluster != nil:
		rf = int16(min(r.cfg.Brokers, 3))
		configs = map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}
	case r.cfg.Managed:
		rf = 1
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(r.admin).CreateTopics(cctx, r.cfg.Partitions, rf, configs, r.in, r.out)
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for _, t := range resp.Sorted() {
		if t.Err != nil {
			return fmt.Errorf("creating topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

// report feeds cfg.Progress.
func (r *runner) report(ctx context.Context) {
	if r.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.progress()
		}
	}
}

func (r *runner) progress() {
	if r.cfg.Progress == nil {
		return
	}
	r.mu.Lock()
	p := Progress{Phase: r.phase, Elapsed: time.Since(r.start), Duration: r.cfg.Duration, Faults: r.faults, LastFault: r.lastFault}
	for _, in := range r.instances {
		if st := in.status.Load(); st != nil {
			p.Sent += st.Sent
			p.Acked += st.Acked
			p.Polled += st.Polled
			p.Produced += st.Produced
		}
	}
	r.mu.Unlock()
	if p.Elapsed > p.Duration {
		p.Elapsed = p.Duration
	}
	r.cfg.Progress(p)
}

// timeline counts input and output acknowledgements per second.
func timeline(h History, start time.Time, in, out string, d time.Duration) []Sample {
	n := int(math.Ceil(d.Seconds()))
	s := make([]Sample, n)
	for i := range s {
		s[i].Second = i
	}
	for _, e := range h {
		if e.Type != EvAck {
			continue
		}
		i := int(time.Duration(e.Time - start.UnixNano()).Seconds())
		if i < 0 || i >= n {
			continue
		}
		switch e.Topic {
		case in:
			s[i].Acked++
		case out:
			s[i].Processed++
		}
	}
	return s
}

// ExitCode maps a run's outcome to the CLI's exit status: 0 when the
// guarantee held, 1 when it was violated, 2 when the run could not be
// measured (a setup error, or an inconclusive run: values neither lost nor
// delivered when the drain ended).
func ExitCode(rep *Report, err error) int {
	var se *SetupError
	switch {
	case errors.As(err, &se), err != nil:
		return 2
	case rep == nil:
		return 2
	case len(rep.Violations) > 0:
		return 1
	case !rep.OK:
		return 2 // inconclusive
	}
	return 0
}

// linkStats are the links' counters, nil without a cluster.
func (r *runner) linkStats() *LinkStats {
	if r.links == nil {
		return nil
	}
	s := r.links.Stats()
	return &s
}
