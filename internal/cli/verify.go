package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/exactly/exactly/verify"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// ExitError carries the exit status a command wants; main exits with it
// after printing the message (if any).
type ExitError struct {
	// Code is the process exit status.
	Code int
	// Err explains it; nil prints nothing.
	Err error
}

// Error returns the cause's message, or "" when there is none.
func (e *ExitError) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

// Unwrap returns the cause.
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns Code.
func (e *ExitError) ExitCode() int { return e.Code }

type verifyFlags struct {
	conn                                  connFlags
	modes, faults, bootstrap, report, dir string
	duration, drain                       time.Duration
	seed                                  int64
	managed, asJSON, keep, verbose        bool
	brokers                               int
	progress                              string
	producers, pipelines                  int
	partitions                            int32
	rate                                  float64
	producerKV, consumerKV                []string
	dynamic                               bool
}

// VerifyCommand returns the "verify" command: run producers and a
// consume-process-produce pipeline as processes under injected faults,
// reread everything, and measure lost, duplicated, aborted-visible and
// reordered records against a delivery guarantee. Exit status 0 means the
// mode's guarantee held, 1 that it was violated, 2 that the run could not
// be measured (a setup error, or a pipeline that did not catch up).
func VerifyCommand() *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Measure delivery guarantees under faults (lost, duplicated, aborted, reordered records)",
		Long: `Run producers and a consume-process-produce pipeline as separate processes
against a broker, inject faults on a schedule drawn from --seed, record a
history of every send, acknowledgement, poll, commit and transaction, reread
both topics with a fresh reader and check the history:

  lost            acknowledged (or logged) input that never reached the output
  duplicates      a value stored or delivered more than once
  aborted reads   a value from an aborted transaction seen by read_committed
  reordered       a partition's values out of send (or input) order
  other           one offset holding two values, polls going backwards or
                  skipping records without a rebalance

Modes set the client configuration and the promise checked:
  at-most-once    acks=1, retries=0, no idempotence; commit before processing
                  (promise: no duplicates)
  at-least-once   acks=all, retries, no idempotence; commit after processing
                  (promise: nothing lost)
  exactly-once    idempotent transactional producers, read_committed, offsets
                  committed in the pipeline's transaction (promise: none of
                  the anomalies)
  share           idempotent producers; the pipeline slots run share-group
                  (KIP-932) consumers that ACCEPT, RELEASE or REJECT each
                  delivery at random (seeded; --consumer
                  share.release.fraction=, share.reject.fraction=). Promise:
                  every acknowledged record is accepted once or archived,
                  none lost, none delivered over the delivery-count limit
                  or after its ACCEPT/REJECT was confirmed. Not in "all";
                  with --managed, one node only (exactly's clusters serve
                  share groups only on partitions the coordinators' node
                  leads).
--producer/--consumer key=value override the mode's settings; the promise
stays the mode's, so a weaker configuration can be held to a stronger
promise.

Faults (--faults a,b or all): ` + faultList() + `.
Clients reach the broker through a proxy that drops or delays responses
after the broker handled the request and resets connections. broker-kill
needs --managed, which starts "exactly serve" on a temporary directory;
with --brokers 3 it starts a cluster of three nodes instead, a broker kill
hits one node, and the cluster faults join: broker-pause (SIGSTOP then
SIGCONT of a node), cluster-kill (SIGKILL of every node at once), and
network faults between nodes, whose traffic to each other goes through
links of the verifier's: partition (one node cut off from the others,
both ways), partition-one-way (what one node sends another is dropped)
and node-delay (node-to-node traffic held up to a delay).

With --tls*, --sasl-* or --command-config the workers reach a secured
cluster: the fault proxy dials the brokers with TLS (workers speak to it on
loopback), SASL passes through it, and the password reaches the worker
processes in their environment, never in their arguments.

Exit status: 0 the guarantee held, 1 it was violated, 2 it could not be
measured (setup error, or values neither delivered nor lost when the drain
ended: the pipeline did not catch up).`,
		Example: `  exactly verify --managed --mode exactly-once --faults all --duration 30s --seed 7
  exactly verify --managed --mode all --report modes.png
  exactly verify --managed --brokers 3 --mode exactly-once --faults all --duration 60s --seed 1
  exactly verify --managed --mode share --faults all --seed 3
  exactly verify --bootstrap kafka:9092 --mode at-least-once --faults lost-ack,reset --json
  exactly verify --managed --mode exactly-once --producer transactional=false --consumer commit=after`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			return runVerify(cmd, f)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ExitError{Code: 2, Err: err} })
	fs := cmd.Flags()
	fs.StringVar(&f.modes, "mode", "exactly-once", "at-most-once, at-least-once, exactly-once, share, a comma list, or all (the first three)")
	fs.StringVar(&f.faults, "faults", "all", "faults to inject: a comma list, all, or none")
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "how long the workload runs (per mode)")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "bound on stopping, catching up and rereading after --duration")
	fs.Int64Var(&f.seed, "seed", 0, "seed for the fault schedule and the workers (0: pick one and print it)")
	fs.BoolVar(&f.managed, "managed", false, "start and own a broker (exactly serve) on a temporary directory; enables broker-kill")
	fs.StringVar(&f.bootstrap, "bootstrap", "", "run against this external cluster (host:port,...) instead of a managed broker")
	fs.IntVar(&f.brokers, "brokers", 1,
		"with --managed: nodes of the managed cluster (above 1: topics of replication factor min(N,3), min.insync.replicas 2; adds broker-pause and cluster-kill to all)")
	fs.StringArrayVar(&f.producerKV, "producer", nil, "producer override key=value (repeatable): "+strings.Join(verify.ProducerKeys, ", "))
	fs.StringArrayVar(&f.consumerKV, "consumer", nil, "consumer override key=value (repeatable): "+strings.Join(verify.ConsumerKeys, ", "))
	fs.IntVar(&f.producers, "producers", 2, "producer processes")
	fs.IntVar(&f.pipelines, "pipelines", 2, "pipeline (consume-process-produce) processes; share consumers in share mode")
	fs.Int32Var(&f.partitions, "partitions", 3, "partitions per topic")
	fs.Float64Var(&f.rate, "rate", 1000, "records per second across all producers (-1: unlimited)")
	fs.BoolVar(&f.dynamic, "dynamic-membership", false, "pipeline workers join without group.instance.id")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&f.report, "report", "", "draw a chart of the results to this PNG (or .svg) file")
	fs.StringVar(&f.dir, "dir", "", "keep histories, logs and broker data here (default: a temporary directory, kept only on failure)")
	fs.BoolVar(&f.keep, "keep", false, "keep the temporary directory")
	fs.BoolVar(&f.verbose, "verbose", false, "log the run (faults, restarts) to stderr")
	fs.StringVar(&f.progress, "progress", "auto", "progress bar on stderr: auto (when a terminal), always, never")
	f.conn.registerSecurity(fs)
	f.conn.bootstrapFlags = []*pflag.Flag{fs.Lookup("bootstrap")}
	cmd.AddCommand(verifyWorkerCommand())
	return cmd
}

func faultList() string {
	var names []string
	for _, k := range append(verify.AllFaults(true), verify.ClusterFaults...) {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

func runVerify(cmd *cobra.Command, f *verifyFlags) error {
	setup := func(err error) error { return &ExitError{Code: 2, Err: err} }
	var modes []verify.Mode
	if strings.TrimSpace(f.modes) == "all" {
		modes = verify.Modes
	} else {
		for _, s := range strings.Split(f.modes, ",") {
			m, err := verify.ParseMode(s)
			if err != nil {
				return setup(err)
			}
			modes = append(modes, m)
		}
	}
	f.conn.bootstrap = f.bootstrap
	conn, err := f.conn.settings()
	if err != nil {
		return setup(err)
	}
	if f.managed == (len(conn.Bootstrap) > 0) {
		return setup(errors.New("give exactly one of --managed and --bootstrap (or bootstrap.servers in --command-config)"))
	}
	if f.managed && conn.Secure() {
		return setup(errors.New("TLS and SASL settings apply to a --bootstrap cluster; the managed broker is plaintext"))
	}
	faults, err := verify.ParseFaults(f.faults, f.managed)
	if err != nil {
		return setup(err)
	}
	if f.brokers > 1 && !f.managed {
		return setup(errors.New("--brokers needs --managed (a cluster verify starts itself)"))
	}
	if f.brokers > 1 && strings.TrimSpace(f.faults) == "all" {
		faults = append(faults, verify.ClusterFaults...)
	}
	seeds := conn.Bootstrap
	if f.seed == 0 {
		f.seed = time.Now().UnixNano()%1_000_000 + 1
	}
	stderr := cmd.ErrOrStderr()
	if !f.asJSON {
		fmt.Fprintf(stderr, "verify: seed %d, faults %s\n", f.seed, f.faults)
	}
	ctx, stop := signal.NotifyContext(commandContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var reps []*verify.Report
	code := 0
	for _, m := range modes {
		cfg := verify.DefaultConfig(m)
		cfg.ProducerOverrides, cfg.ConsumerOverrides = f.producerKV, f.consumerKV
		cfg.Faults, cfg.Duration, cfg.Drain, cfg.Seed = faults, f.duration, f.drain, f.seed
		cfg.Managed, cfg.Bootstrap, cfg.Security, cfg.Brokers = f.managed, seeds, conn, f.brokers
		cfg.Producers, cfg.Pipelines, cfg.Partitions, cfg.Rate = f.producers, f.pipelines, f.partitions, f.rate
		cfg.StaticMembership = !f.dynamic
		cfg.KeepDir = f.keep
		if f.dir != "" {
			cfg.Dir = f.dir
			if len(modes) > 1 {
				cfg.Dir = f.dir + "/" + string(m)
			}
		}
		if f.verbose {
			cfg.Log = stderr
		}
		bar := newVerifyBar(stderr, f.progress, m, f.duration)
		cfg.Progress = bar.update
		rep, err := verify.Run(ctx, cfg)
		bar.finish()
		if err != nil {
			return setup(fmt.Errorf("%s: %w", m, err))
		}
		reps = append(reps, rep)
		if c := verify.ExitCode(rep, nil); c == 1 || (c == 2 && code == 0) {
			code = c
		}
	}

	out := cmd.OutOrStdout()
	if f.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		var v any = reps[0]
		if len(reps) > 1 {
			v = struct {
				Runs []*verify.Report `json:"runs"`
				OK   bool             `json:"ok"`
			}{reps, code == 0}
		}
		if err := enc.Encode(v); err != nil {
			return setup(err)
		}
	} else if err := verify.WriteTable(out, reps); err != nil {
		return setup(err)
	}
	if f.report != "" {
		if err := verify.WriteChart(f.report, reps); err != nil {
			return setup(fmt.Errorf("drawing %s: %w", f.report, err))
		}
	}
	if code != 0 {
		var broken []string
		for _, r := range reps {
			switch {
			case len(r.Violations) > 0:
				broken = append(broken, fmt.Sprintf("%s guarantee violated: %s", r.Mode, strings.Join(r.Violations, ", ")))
			case !r.OK:
				broken = append(broken, fmt.Sprintf("%s guarantee not established: %d values unseen (not delivered, or not settled in share mode) when the drain ended (raise --drain or lower --rate)", r.Mode, r.Unseen))
			}
		}
		return &ExitError{Code: code, Err: errors.New(strings.Join(broken, "; "))}
	}
	return nil
}

// verifyBar renders progress on stderr.
type verifyBar struct {
	mu   sync.Mutex
	mode verify.Mode
	bar  *progressbar.ProgressBar
}

func newVerifyBar(w io.Writer, mode string, m verify.Mode, d time.Duration) *verifyBar {
	show := mode == "always"
	if mode == "auto" {
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			show = true
		}
	}
	if !show {
		return &verifyBar{}
	}
	return &verifyBar{mode: m, bar: progressbar.NewOptions64(d.Milliseconds(),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(150*time.Millisecond),
		progressbar.OptionSetDescription(string(m)),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionClearOnFinish(),
	)}
}

func (b *verifyBar) update(p verify.Progress) {
	if b.bar == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bar.Set64(p.Elapsed.Milliseconds())
	desc := fmt.Sprintf("%s %s: sent %d acked %d processed %d faults %d", b.mode, p.Phase, p.Sent, p.Acked, p.Produced, p.Faults)
	if p.LastFault != "" && p.Phase == "running" {
		desc += " (" + strings.TrimSpace(p.LastFault) + ")"
	}
	b.bar.Describe(desc)
}

func (b *verifyBar) finish() {
	if b.bar == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bar.Finish()
	b.bar.Close()
}

// verifyWorkerCommand is the hidden process verify starts for producers
// and pipeline workers.
func verifyWorkerCommand() *cobra.Command {
	var spec string
	cmd := &cobra.Command{
		Use:    "worker --spec JSON",
		Short:  "Run one verify worker process (started by verify itself)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			var s verify.WorkerSpec
			if err := json.Unmarshal([]byte(spec), &s); err != nil {
				return &ExitError{Code: 2, Err: fmt.Errorf("--spec: %w", err)}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			if err := verify.RunWorker(ctx, s, os.Stdin, os.Stdout); err != nil {
				return &ExitError{Code: 3, Err: fmt.Errorf("%s: %w", s.Proc, err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&spec, "spec", "", "the worker's specification (JSON)")
	return cmd
}
