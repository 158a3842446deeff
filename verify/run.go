package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

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
	// Bootstrap is the external cluster's bootstrap list.
	Bootstrap []string
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
	// Timeline holds per-second counts, for charts.
	Timeline []Sample `json:"timeline,omitempty"`
	// Dir is where the run's files were kept, if they were.
	Dir string `json:"dir,omitempty"`
	// Notes are things worth knowing about the run.
	Notes []string `json:"notes,omitempty"`
}

// slot is a process identity that survives restarts: a producer or pipeline
// position with its transactional and group instance ids.
type slot struct {
	name     string
	role     string
	gen      int
	cur      *instance
	all      []*instance
	zombies  []*instance
	diedAt   time.Time
	stopping bool
	now      bool // replace immediately (zombie), no restart pause
}

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
	upstream []string
	admin    *kgo.Client
	rec      *Recorder
	logw     io.Writer

	mu        sync.Mutex
	slots     []*slot
	extras    []*instance
	instances []*instance
	extraN    int
	faults    int
	lastFault string
	phase     string
	start     time.Time
	notes     []string
	dropOn    map[int]float64
	delayOn   map[int]time.Duration
	brokerMu  sync.Mutex
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
		dropOn: map[int]float64{}, delayOn: map[int]time.Duration{}}
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
		if r.broker, err = managed.Start(cfg.ServeCommand, cfg.Env, r.dir, managedConfig); err != nil {
			return nil, &SetupError{err}
		}
		r.upstream = []string{r.broker.Addr()}
	} else {
		r.upstream = cfg.Bootstrap
	}
	if r.proxy, err = NewProxy(r.upstream, cfg.Seed); err != nil {
		return nil, &SetupError{err}
	}
	defer r.proxy.Close()
	if r.admin, err = kgo.NewClient(kgo.SeedBrokers(r.upstream...), kgo.ClientID("verify"),
		kgo.MetadataMinAge(250*time.Millisecond), kgo.RetryTimeout(20*time.Second), kgo.AlwaysRetryEOF()); err != nil {
		return nil, &SetupError{err}
	}
	defer r.admin.Close()
	if err := r.createTopics(ctx); err != nil {
		return nil, &SetupError{err}
	}
	r.rec.Record(Event{Type: EvRun, Topic: r.in, Detail: string(cfg.Mode),
		Values: []string{r.out, fmt.Sprintf("seed=%d", cfg.Seed), "profile: " + r.profile.String()}})

	schedule := NewSchedule(ScheduleOptions{Seed: cfg.Seed, Duration: cfg.Duration, Kinds: cfg.Faults,
		Producers: cfg.Producers, Pipelines: cfg.Pipelines})
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

	// Faults, until the workload's end.
	nemCtx, stopNem := context.WithDeadline(ctx, r.start.Add(cfg.Duration))
	var nemWG sync.WaitGroup
	for i, f := range schedule {
		select {
		case <-nemCtx.Done():
		case <-time.After(time.Until(r.start.Add(f.At))):
			nemWG.Add(1)
			go func(i int, f Fault) { defer nemWG.Done(); r.inject(nemCtx, i, f) }(i, f)
		}
		if nemCtx.Err() != nil {
			break
		}
	}
	<-nemCtx.Done()
	stopNem()
	// Everything after the workload, healing included, counts against the
	// drain bound.
	durEnd := r.start.Add(cfg.Duration)
	r.setPhase("draining")
	nemWG.Wait() // every fault heals itself when nemCtx ends
	if ctx.Err() != nil {
		return nil, setupErr("interrupted")
	}

	deadline := durEnd.Add(cfg.Drain)
	at := func(f float64) time.Time { return durEnd.Add(time.Duration(f * float64(cfg.Drain))) }
	r.logf("workload ended; draining")
	r.stopRole(RoleProducer, at(0.25))
	if r.profile.Producer.Transactional {
		r.fenceDeadProducers(at(0.35))
	}
	drained, target, err := r.waitCaughtUp(ctx, at(0.75))
	if err != nil {
		r.logf("drain: %v", err)
	}
	r.stopRole(RolePipeline, at(0.8))
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
	offs, err := kadm.NewClient(r.admin).FetchOffsets(fctx, r.group)
	if err != nil {
		return nil, setupErr("fetching the group's offsets: %v", err)
	}
	ge := Event{Type: EvGroupOffsets, Commits: map[string]map[int32]int64{r.in: {}}}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == r.in && o.Err == nil {
			ge.Commits[r.in][o.Partition] = o.At
		}
	})
	r.rec.Record(ge)
	if !drained {
		notes = append(notes, fmt.Sprintf("the pipeline had not caught up when the drain ended (target %v, committed %v)", target, ge.Commits[r.in]))
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
	res := Check(h, CheckOptions{InTopic: r.in, OutTopic: r.out, Promise: cfg.Mode})
	rep := &Report{
		Result: res, Seed: cfg.Seed, Profile: r.profile.String(), Faults: cfg.Faults, Schedule: schedule,
		FaultsInjected: r.faults, DurationSeconds: cfg.Duration.Seconds(),
		ElapsedSeconds: time.Since(r.start).Seconds(), Drained: drained, Proxy: r.proxy.Stats(), Notes: notes,
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
	if r.cfg.Managed {
		rf = 1
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(r.admin).CreateTopics(cctx, r.cfg.Partitions, rf, nil, r.in, r.out)
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

// spec builds the WorkerSpec of a slot's next instance.
func (r *runner) spec(s *slot, proc string) WorkerSpec {
	sp := WorkerSpec{
		Role: s.role, Proc: proc, Seed: r.cfg.Seed, Brokers: r.proxy.Addrs(),
		InTopic: r.in, OutTopic: r.out, Partitions: r.cfg.Partitions, Group: r.group,
		TransactionalID: "verify-" + r.runID + "-" + s.name, Profile: r.profile,
		History: filepath.Join(r.histDir, proc+".jsonl"), TxnTimeout: 10 * time.Second,
	}
	if s.role == RoleProducer {
		if r.cfg.Rate > 0 {
			sp.Rate = r.cfg.Rate / float64(r.cfg.Producers)
		}
	} else if r.cfg.StaticMembership && s.name[0] == 'c' {
		sp.InstanceID = r.runID + "-" + s.name
	}
	return sp
}

// startSlot starts a slot's next instance. Called without r.mu.
func (r *runner) startSlot(s *slot) error {
	r.mu.Lock()
	proc := fmt.Sprintf("%s.%d", s.name, s.gen)
	s.gen++
	sp := r.spec(s, proc)
	r.mu.Unlock()
	in, err := startInstance(r.cfg.WorkerCommand, r.cfg.Env, sp, filepath.Join(r.logDir, proc+".log"))
	if err != nil {
		return err
	}
	r.mu.Lock()
	s.cur, s.now = in, false
	s.all = append(s.all, in)
	r.instances = append(r.instances, in)
	r.mu.Unlock()
	r.rec.Record(Event{Type: EvStart, Proc: proc, Detail: s.role})
	r.logf("started %s", proc)
	return nil
}

// supervise restarts dead instances of slots that are not stopping.
func (r *runner) supervise(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		var start []*slot
		for _, s := range r.slots {
			if s.stopping {
				continue
			}
			if s.cur != nil && !s.cur.alive() {
				how := "exited"
				if s.cur.err != nil {
					how = s.cur.err.Error()
				}
				r.rec.Record(Event{Type: EvExit, Proc: s.cur.proc, Detail: how})
				r.logf("%s %s", s.cur.proc, how)
				s.cur, s.diedAt = nil, time.Now()
			}
			if s.cur == nil && (s.now || time.Since(s.diedAt) > 300*time.Millisecond) {
				start = append(start, s)
			}
		}
		r.mu.Unlock()
		for _, s := range start {
			if err := r.startSlot(s); err != nil {
				r.logf("restarting %s: %v", s.name, err)
			}
		}
	}
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

// stopRole asks every instance of a role to finish and exit, and kills
// whatever has not exited by the deadline.
func (r *runner) stopRole(role string, by time.Time) {
	r.mu.Lock()
	var ins []*instance
	for _, s := range r.slots {
		if s.role != role {
			continue
		}
		s.stopping = true
		if s.cur != nil {
			ins = append(ins, s.cur)
		}
		for _, z := range s.zombies {
			z.kill()
		}
	}
	r.mu.Unlock()
	for _, in := range ins {
		in.send(CmdStop)
	}
	for _, in := range ins {
		if !in.wait(time.Until(by)) {
			r.logf("%s did not stop in time; killing it", in.proc)
			r.note("%s did not stop within the drain bound and was killed", in.proc)
			in.kill()
			in.wait(5 * time.Second)
		}
	}
}

// fenceDeadProducers runs a fence-only instance for every transactional
// producer slot whose last instance did not finish cleanly, so no
// transaction it left open holds back the last stable offset.
func (r *runner) fenceDeadProducers(by time.Time) {
	var fences []*instance
	for _, s := range r.slots {
		r.mu.Lock()
		last := s.cur
		if last == nil && len(s.all) > 0 {
			last = s.all[len(s.all)-1]
		}
		r.mu.Unlock()
		if s.role != RoleProducer || (last != nil && last.cleanExit()) {
			continue
		}
		sp := r.spec(s, s.name+".fence")
		sp.FenceOnly = true
		in, err := startInstance(r.cfg.WorkerCommand, r.cfg.Env, sp, filepath.Join(r.logDir, sp.Proc+".log"))
		if err != nil {
			r.logf("fencing %s: %v", s.name, err)
			continue
		}
		r.mu.Lock()
		r.instances = append(r.instances, in)
		r.mu.Unlock()
		fences = append(fences, in)
	}
	for _, in := range fences {
		if !in.wait(time.Until(by)) {
			in.kill()
		}
	}
}

// waitCaughtUp waits until the group has committed past the last record of
// every input partition (as the pipeline's isolation level sees them).
func (r *runner) waitCaughtUp(ctx context.Context, by time.Time) (bool, map[int32]int64, error) {
	target := map[int32]int64{}
	rctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	fr, err := ReadTopic(rctx, r.admin, r.in, r.profile.Consumer.ReadCommitted)
	if err != nil {
		return false, target, err
	}
	for p, rs := range fr.Records {
		if len(rs) > 0 {
			target[p] = rs[len(rs)-1].Offset + 1
		}
	}
	adm := kadm.NewClient(r.admin)
	for {
		offs, err := adm.FetchOffsets(rctx, r.group)
		if err == nil {
			done := true
			for p, want := range target {
				o, ok := offs.Lookup(r.in, p)
				if !ok || o.Err != nil || o.At < want {
					done = false
				}
			}
			if done {
				r.logf("the pipeline caught up")
				return true, target, nil
			}
		}
		select {
		case <-rctx.Done():
			return false, target, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *runner) killAll() {
	r.mu.Lock()
	ins := append([]*instance(nil), r.instances...)
	r.mu.Unlock()
	for _, in := range ins {
		if in.alive() {
			in.kill()
		}
	}
	for _, in := range ins {
		in.wait(5 * time.Second)
	}
}

func (r *runner) slotFor(role string, target int) *slot {
	n := 0
	for _, s := range r.slots {
		if s.role == role {
			if n == target {
				return s
			}
			n++
		}
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends; false if ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// inject carries out one fault and heals it, at the latest when ctx ends.
func (r *runner) inject(ctx context.Context, i int, f Fault) {
	r.mu.Lock()
	r.faults++
	r.lastFault = f.String()
	r.mu.Unlock()
	ev := Event{Type: EvFault, Proc: "nemesis", Detail: string(f.Kind)}
	heal := Event{Type: EvHeal, Proc: "nemesis", Detail: string(f.Kind)}
	r.logf("fault: %s", f)
	switch f.Kind {
	case FaultBrokerKill:
		r.brokerMu.Lock()
		defer r.brokerMu.Unlock()
		r.rec.Record(ev)
		r.broker.Kill()
		sleepCtx(ctx, f.For)
		if err := r.broker.Restart(); err != nil {
			r.logf("restarting the broker: %v", err)
			heal.Error = err.Error()
		}
		r.rec.Record(heal)
	case FaultLostAck, FaultDelay:
		r.rec.Record(ev)
		r.mu.Lock()
		if f.Kind == FaultLostAck {
			r.dropOn[i] = f.Probability
		} else {
			r.delayOn[i] = f.Delay
		}
		r.applyNetLocked()
		r.mu.Unlock()
		sleepCtx(ctx, f.For)
		r.mu.Lock()
		delete(r.dropOn, i)
		delete(r.delayOn, i)
		r.applyNetLocked()
		r.mu.Unlock()
		r.rec.Record(heal)
	case FaultReset:
		n := r.proxy.Reset()
		ev.Error = fmt.Sprintf("%d connections", n)
		r.rec.Record(ev)
	case FaultProducerKill, FaultConsumerKill:
		r.mu.Lock()
		s := r.slotFor(f.Role, f.Target)
		var in *instance
		if s != nil {
			in = s.cur
		}
		r.mu.Unlock()
		if in == nil || !in.alive() {
			ev.Error = "target not running"
			r.rec.Record(ev)
			return
		}
		ev.Value = in.proc
		ev.Error = f.Phase
		r.rec.Record(ev)
		in.send(CmdCrash + " " + f.Phase)
		if !in.wait(3 * time.Second) {
			in.kill() // it never reached the phase (idle): kill it anyway
		}
	case FaultRebalance:
		r.mu.Lock()
		r.extraN++
		s := &slot{name: fmt.Sprintf("x%d", r.extraN), role: RolePipeline}
		proc := s.name + ".0"
		sp := r.spec(s, proc)
		r.mu.Unlock()
		in, err := startInstance(r.cfg.WorkerCommand, r.cfg.Env, sp, filepath.Join(r.logDir, proc+".log"))
		if err != nil {
			r.logf("rebalance: %v", err)
			return
		}
		r.mu.Lock()
		r.instances = append(r.instances, in)
		r.mu.Unlock()
		ev.Value = proc
		r.rec.Record(ev)
		sleepCtx(ctx, f.For)
		in.send(CmdStop)
		if !in.wait(5 * time.Second) {
			in.kill()
		}
		r.rec.Record(heal)
	case FaultZombie:
		r.mu.Lock()
		s := r.slotFor(f.Role, f.Target)
		var in *instance
		if s != nil && s.cur != nil && s.cur.alive() && !s.stopping {
			in = s.cur
			s.zombies = append(s.zombies, in)
			s.cur, s.now = nil, true // the supervisor starts the replacement now
		}
		r.mu.Unlock()
		if in == nil {
			ev.Error = "target not running"
			r.rec.Record(ev)
			return
		}
		in.pause(true)
		ev.Value = in.proc
		r.rec.Record(ev)
		sleepCtx(ctx, f.For)
		in.pause(false)
		heal.Value = in.proc
		r.rec.Record(heal)
		// The zombie runs on beside its replacement for a moment (fenced,
		// if fencing works), then goes.
		sleepCtx(ctx, 2*time.Second)
		in.kill()
	}
}

func (r *runner) applyNetLocked() {
	var drop float64
	var delay time.Duration
	for _, p := range r.dropOn {
		drop = max(drop, p)
	}
	for _, d := range r.delayOn {
		delay = max(delay, d)
	}
	r.proxy.SetDrop(drop)
	r.proxy.SetDelay(delay)
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
