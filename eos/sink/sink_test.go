package sink_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/eos/sink"
	"github.com/exactly/exactly/internal/testenv"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite"
)

func randName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// env is one database for a test: the offsets table, a table the handlers
// write applied records to (no unique key, so a duplicate would show), and
// a way to open further handles, as separate processes would.
type env struct {
	dialect sink.Dialect
	tbl     sink.Table
	applied string
	db      *sql.DB // the test's own handle, for checks
	open    func(t *testing.T) *sql.DB
}

// q adapts placeholders like the package does.
func (e *env) q(s string) string {
	if e.dialect == sink.SQLite {
		return strings.ReplaceAll(s, "$", "?")
	}
	return s
}

func pgEnv(t *testing.T) *env {
	t.Helper()
	open := func(t *testing.T) *sql.DB {
		db, err := sql.Open("pgx", testenv.PostgresDSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db := open(t)
	schema := randName("sink_")
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	t.Cleanup(func() { db.Exec("DROP SCHEMA " + schema + " CASCADE") })
	return setup(t, &env{dialect: sink.Postgres, tbl: sink.Table{Name: schema + ".offsets", Dialect: sink.Postgres},
		applied: schema + ".applied", db: db, open: open})
}

// sqliteEnv uses a database file. immediate opens it with _txlock=immediate,
// the configuration the package documents; without it BEGIN takes no lock
// until the first write.
func sqliteEnv(t *testing.T, immediate bool) *env {
	t.Helper()
	dsn := "file:" + filepath.Join(t.TempDir(), "sink.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(30000)"
	if immediate {
		dsn += "&_txlock=immediate"
	}
	open := func(t *testing.T) *sql.DB {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	return setup(t, &env{dialect: sink.SQLite, tbl: sink.Table{Dialect: sink.SQLite}, applied: "applied", db: open(t), open: open})
}

func setup(t *testing.T, e *env) *env {
	t.Helper()
	ctx := context.Background()
	if err := e.tbl.CreateSchema(ctx, e.db); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.ExecContext(ctx, `CREATE TABLE `+e.applied+` (topic TEXT NOT NULL, part INTEGER NOT NULL,
		off BIGINT NOT NULL, value TEXT NOT NULL, instance TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return e
}

// dialects runs fn against PostgreSQL and SQLite.
func dialects(t *testing.T, sqliteImmediate bool, fn func(t *testing.T, e *env)) {
	t.Run("postgres", func(t *testing.T) { fn(t, pgEnv(t)) })
	t.Run("sqlite", func(t *testing.T) { fn(t, sqliteEnv(t, sqliteImmediate)) })
}

// record inserts every record into the applied table, tagged with instance.
func (e *env) record(ctx context.Context, tx *sql.Tx, instance string, rs []*kgo.Record) error {
	for _, r := range rs {
		if _, err := tx.ExecContext(ctx, e.q(`INSERT INTO `+e.applied+` (topic, part, off, value, instance) VALUES ($1, $2, $3, $4, $5)`),
			r.Topic, r.Partition, r.Offset, string(r.Value), instance); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) count(t *testing.T, where string) int {
	t.Helper()
	q := `SELECT count(*) FROM ` + e.applied
	if where != "" {
		q += " WHERE " + where
	}
	var n int
	if err := e.db.QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkOnce fails unless every value in want was applied exactly once and
// nothing else was applied.
func (e *env) checkOnce(t *testing.T, want map[string]bool) {
	t.Helper()
	rows, err := e.db.Query(`SELECT value, count(*) FROM ` + e.applied + ` GROUP BY value`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var v string
		var n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		switch {
		case !want[v]:
			t.Errorf("applied %q, which was never committed to Kafka", v)
		case n != 1:
			t.Errorf("value %q applied %d times", v, n)
		}
		seen++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("%d distinct values applied, want %d", seen, len(want))
	}
}

func (e *env) positions(t *testing.T, group string) map[int32]sink.Position {
	t.Helper()
	ps, err := e.tbl.Positions(context.Background(), e.db, group)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]sink.Position{}
	for _, p := range ps {
		out[p.Partition] = p
	}
	return out
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// producer writes values to a topic, remembering each acknowledged value.
type producer struct {
	cl    *kgo.Client
	topic string
	parts int32
	mu    sync.Mutex
	acked map[string]bool
	n     int
}

func newProducer(t *testing.T, addr, topic string, parts int32) *producer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &producer{cl: cl, topic: topic, parts: parts, acked: map[string]bool{}}
}

// produce writes n records to partition (round robin if it is negative).
func (p *producer) produce(t *testing.T, n int, partition int32) {
	t.Helper()
	var rs []*kgo.Record
	p.mu.Lock()
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("v-%06d", p.n)
		r := &kgo.Record{Topic: p.topic, Partition: partition, Value: []byte(v)}
		if partition < 0 {
			r.Partition = int32(p.n) % p.parts
		}
		p.n++
		rs = append(rs, r)
	}
	p.mu.Unlock()
	if err := p.cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Error(err)
		return
	}
	p.mu.Lock()
	for _, r := range rs {
		p.acked[string(r.Value)] = true
	}
	p.mu.Unlock()
}

func (p *producer) values() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]bool, len(p.acked))
	for k := range p.acked {
		out[k] = true
	}
	return out
}

// manualClient is a plain client for admin calls.
func manualClient(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// instance runs one sink until its context is canceled.
type instance struct {
	s      *sink.Sink
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg sink.Config) *instance {
	t.Helper()
	s, err := sink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- s.Run(ctx) }()
	t.Cleanup(func() { in.stop(t) })
	return in
}

// stop cancels the sink and waits for Run, which must end with
// context.Canceled (anything else is a failure the test did not expect).
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return within 30s of cancel")
	}
}

// TestExactlyOnceAcrossRebalances runs three sink instances that join and
// leave while records keep arriving; every committed record is applied once,
// aborted ones never, and the stored offsets end at the partitions' ends.
func TestExactlyOnceAcrossRebalances(t *testing.T) {
	dialects(t, true, func(t *testing.T, e *env) {
		b := exactly.NewTestBroker(t)
		const topic, group = "rebalance", "g"
		createTopic(t, b.Addr(), topic, 4)

		// An aborted transaction first: read_committed must hide it.
		txp, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.TransactionalID("aborter"), kgo.DefaultProduceTopic(topic))
		if err != nil {
			t.Fatal(err)
		}
		defer txp.Close()
		if err := txp.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			v := fmt.Sprintf("aborted-%d", i)
			if err := txp.ProduceSync(context.Background(), &kgo.Record{Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txp.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
			t.Fatal(err)
		}

		p := newProducer(t, b.Addr(), topic, 4)
		stopProducing := make(chan struct{})
		var produced sync.WaitGroup
		produced.Add(1)
		go func() {
			defer produced.Done()
			for {
				select {
				case <-stopProducing:
					return
				case <-time.After(10 * time.Millisecond):
				}
				p.produce(t, 5, -1)
			}
		}()

		var handled sync.Map // instance -> *atomic.Int64
		cfg := func(name string) sink.Config {
			n := new(atomic.Int64)
			handled.Store(name, n)
			return sink.Config{
				DB: e.open(t), Table: e.tbl, Group: group, Topics: []string{topic}, Name: name,
				Kafka:          []kgo.Opt{kgo.SeedBrokers(b.Addr()), kgo.FetchMaxWait(100 * time.Millisecond)},
				MaxPollRecords: 20,
				Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
					if err := e.record(ctx, tx, name, rs); err != nil {
						return err
					}
					n.Add(int64(len(rs)))
					return nil
				},
			}
		}
		handledBy := func(name string) int64 {
			v, _ := handled.Load(name)
			return v.(*atomic.Int64).Load()
		}

		a := start(t, cfg("a"))
		waitFor(t, 30*time.Second, "a to handle records", func() bool { return handledBy("a") > 0 })
		bi := start(t, cfg("b"))
		waitFor(t, 30*time.Second, "b to handle records", func() bool { return handledBy("b") > 0 })
		time.Sleep(500 * time.Millisecond)
		a.stop(t) // leaves the group: b takes everything
		time.Sleep(time.Second)
		c := start(t, cfg("c"))
		waitFor(t, 30*time.Second, "c to handle records", func() bool { return handledBy("c") > 0 })
		time.Sleep(time.Second)
		close(stopProducing)
		produced.Wait()

		want := p.values()
		waitFor(t, 60*time.Second, "every record applied", func() bool { return e.count(t, "") >= len(want) })
		time.Sleep(300 * time.Millisecond) // a duplicate would land now, if at all
		bi.stop(t)
		c.stop(t)
		e.checkOnce(t, want)
		if n := e.count(t, "value LIKE 'aborted-%'"); n != 0 {
			t.Errorf("%d records of an aborted transaction applied", n)
		}

		ends := endOffsets(t, b.Addr(), topic)
		pos := e.positions(t, group)
		for part, end := range ends {
			// The end may be one past the last data record (the abort
			// marker); the stored offset is one past the last record
			// handled.
			last := lastApplied(t, e, part)
			if pos[part].NextOffset != last+1 || end < last+1 {
				t.Errorf("partition %d: stored offset %d, last applied %d, end %d", part, pos[part].NextOffset, last, end)
			}
		}
		for _, in := range []*instance{a, bi, c} {
			if st := in.s.Stats(); st.Skipped != 0 || st.Fenced != 0 {
				t.Errorf("stats %+v: nothing should be skipped or fenced in clean rebalances", st)
			}
		}
		t.Logf("handled: a=%d b=%d c=%d of %d", handledBy("a"), handledBy("b"), handledBy("c"), len(want))
	})
}

func lastApplied(t *testing.T, e *env, part int32) int64 {
	t.Helper()
	var last sql.NullInt64
	if err := e.db.QueryRow(e.q(`SELECT max(off) FROM `+e.applied+` WHERE part = $1`), part).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if !last.Valid {
		return -1
	}
	return last.Int64
}

func endOffsets(t *testing.T, addr, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

var errBoom = errors.New("boom")

// TestHandlerErrorRollsBack: a failing handler's writes are rolled back
// with its offsets and the batch is retried; after MaxRetries the sink
// stops with the error, positioned at the failing batch.
func TestHandlerErrorRollsBack(t *testing.T) {
	dialects(t, true, func(t *testing.T, e *env) {
		b := exactly.NewTestBroker(t)
		createTopic(t, b.Addr(), "t", 1)
		p := newProducer(t, b.Addr(), "t", 1)
		p.produce(t, 10, 0)

		t.Run("retried", func(t *testing.T) {
			var failures atomic.Int64
			in := start(t, sink.Config{
				DB: e.open(t), Table: e.tbl, Group: "retry", Topics: []string{"t"},
				Kafka:          []kgo.Opt{kgo.SeedBrokers(b.Addr())},
				MaxPollRecords: 3, RetryBackoff: 10 * time.Millisecond,
				Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
					// Write first, then fail: the writes must vanish.
					if err := e.record(ctx, tx, "retry", rs); err != nil {
						return err
					}
					for _, r := range rs {
						if r.Offset == 5 && failures.Load() < 2 {
							failures.Add(1)
							return errBoom
						}
					}
					return nil
				},
			})
			waitFor(t, 30*time.Second, "offset 10 stored", func() bool { return e.positions(t, "retry")[0].NextOffset == 10 })
			in.stop(t)
			e.checkOnce(t, p.values())
			if st := in.s.Stats(); st.Retries != 2 || st.Records != 10 {
				t.Errorf("stats %+v, want 2 retries and 10 records", st)
			}
		})
		if _, err := e.db.Exec(`DELETE FROM ` + e.applied); err != nil {
			t.Fatal(err)
		}

		t.Run("gives up", func(t *testing.T) {
			var calls atomic.Int64
			s, err := sink.New(sink.Config{
				DB: e.open(t), Table: e.tbl, Group: "poison", Topics: []string{"t"},
				Kafka:          []kgo.Opt{kgo.SeedBrokers(b.Addr())},
				MaxPollRecords: 1, MaxRetries: 2, RetryBackoff: 10 * time.Millisecond,
				Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
					if err := e.record(ctx, tx, "poison", rs); err != nil {
						return err
					}
					if rs[0].Offset == 7 {
						calls.Add(1)
						return errBoom
					}
					return nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err = s.Run(ctx)
			if !errors.Is(err, errBoom) {
				t.Fatalf("Run = %v, want the handler's error", err)
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("poison batch handled %d times, want 3 (1 + MaxRetries)", n)
			}
			if pos := e.positions(t, "poison")[0].NextOffset; pos != 7 {
				t.Errorf("stored offset %d, want 7 (the failing record)", pos)
			}
			var n, distinct int
			if err := e.db.QueryRow(`SELECT count(*), count(DISTINCT off) FROM `+e.applied).Scan(&n, &distinct); err != nil {
				t.Fatal(err)
			}
			if n != 7 || distinct != 7 || lastApplied(t, e, 0) != 6 {
				t.Errorf("%d rows (%d distinct) up to offset %d applied, want offsets 0..6 once", n, distinct, lastApplied(t, e, 0))
			}
		})
	})
}

// TestZombieCannotCommit: instance a is stuck in its handler long enough to
// be kicked out of the group; b takes the partition and applies everything;
// when a finally tries to commit, its fence is stale and its transaction
// rolls back. SQLite runs without _txlock=immediate here: with it, a's open
// transaction would hold the database's only write lock and b could not
// even take its fence (in PostgreSQL a stuck handler blocks nobody, since
// the offset row is touched last).
func TestZombieCannotCommit(t *testing.T) {
	dialects(t, false, func(t *testing.T, e *env) {
		b := exactly.NewTestBroker(t)
		const topic, group = "z", "zg"
		createTopic(t, b.Addr(), topic, 1)
		p := newProducer(t, b.Addr(), topic, 1)
		p.produce(t, 10, 0)

		kafka := []kgo.Opt{kgo.SeedBrokers(b.Addr()), kgo.RebalanceTimeout(2 * time.Second), kgo.SessionTimeout(6 * time.Second),
			kgo.HeartbeatInterval(500 * time.Millisecond)}
		entered := make(chan struct{})
		release := make(chan struct{})
		var aCalls atomic.Int64
		a := start(t, sink.Config{
			DB: e.open(t), Table: e.tbl, Group: group, Topics: []string{topic}, Name: "a", Kafka: kafka,
			Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
				if aCalls.Add(1) == 1 {
					close(entered)
					<-release
				}
				return e.record(ctx, tx, "a", rs)
			},
		})
		<-entered
		bi := start(t, sink.Config{
			DB: e.open(t), Table: e.tbl, Group: group, Topics: []string{topic}, Name: "b", Kafka: kafka,
			Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
				return e.record(ctx, tx, "b", rs)
			},
		})
		waitFor(t, 60*time.Second, "b to apply all records", func() bool { return e.count(t, "instance = 'b'") == 10 })
		pos := e.positions(t, group)[0]
		if pos.NextOffset != 10 || pos.Owner != "b" || pos.Fence < 2 {
			t.Fatalf("position %+v, want offset 10 under b's fence", pos)
		}
		close(release) // a's handler writes and returns: its commit must be refused
		waitFor(t, 30*time.Second, "a to be fenced and rejoin", func() bool { return a.s.Stats().Restarts > 0 })
		a.stop(t)
		bi.stop(t)
		if n := e.count(t, "instance = 'a'"); n != 0 {
			t.Errorf("the zombie committed %d rows", n)
		}
		e.checkOnce(t, p.values())
		if st := a.s.Stats(); st.Transactions != 0 || st.Restarts == 0 {
			t.Errorf("zombie stats %+v: want no transaction and a restart after fencing", st)
		}
		if pos := e.positions(t, group)[0]; pos.NextOffset != 10 {
			t.Errorf("stored offset %d after the zombie, want 10", pos.NextOffset)
		}
	})
}

// TestRestartResumesFromDatabase: a restarted sink starts from the offsets
// in the database, not from the group's Kafka offsets, even when those are
// wrong in both directions; with CommitKafkaOffsets the Kafka copy follows
// the database.
func TestRestartResumesFromDatabase(t *testing.T) {
	dialects(t, true, func(t *testing.T, e *env) {
		b := exactly.NewTestBroker(t)
		const topic, group = "r", "rg"
		createTopic(t, b.Addr(), topic, 2)
		p := newProducer(t, b.Addr(), topic, 2)
		p.produce(t, 10, 0)
		p.produce(t, 10, 1)
		cfg := sink.Config{
			DB: e.open(t), Table: e.tbl, Group: group, Topics: []string{topic},
			Kafka:              []kgo.Opt{kgo.SeedBrokers(b.Addr())},
			CommitKafkaOffsets: true,
			Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
				return e.record(ctx, tx, "r", rs)
			},
		}
		first := start(t, cfg)
		waitFor(t, 30*time.Second, "first run to store 10/10", func() bool {
			pos := e.positions(t, group)
			return pos[0].NextOffset == 10 && pos[1].NextOffset == 10
		})
		cl := manualClient(t, b.Addr())
		adm := kadm.NewClient(cl)
		waitFor(t, 30*time.Second, "kafka offsets to mirror the database", func() bool {
			got, err := adm.FetchOffsets(context.Background(), group)
			if err != nil {
				return false
			}
			o0, _ := got.Lookup(topic, 0)
			o1, _ := got.Lookup(topic, 1)
			return o0.At == 10 && o1.At == 10
		})
		first.stop(t)

		p.produce(t, 10, 0)
		p.produce(t, 10, 1)
		// Kafka's copy now says: partition 0 is done (would skip 10
		// records), partition 1 starts over (would apply 10 twice).
		var off kadm.Offsets
		off.AddOffset(topic, 0, 20, -1)
		off.AddOffset(topic, 1, 0, -1)
		resp, err := adm.CommitOffsets(context.Background(), group, off)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatal(err)
		}

		cfg.CommitKafkaOffsets = false
		cfg.DB = e.open(t)
		second := start(t, cfg)
		waitFor(t, 30*time.Second, "second run to store 20/20", func() bool {
			pos := e.positions(t, group)
			return pos[0].NextOffset == 20 && pos[1].NextOffset == 20
		})
		time.Sleep(300 * time.Millisecond)
		second.stop(t)
		e.checkOnce(t, p.values())
		if st := second.s.Stats(); st.Records != 20 || st.Skipped != 0 {
			t.Errorf("second run stats %+v, want exactly the 20 new records", st)
		}
	})
}

// TestConfigValidation: bad configs and unsafe table names are refused
// before anything touches Kafka or the database.
func TestConfigValidation(t *testing.T) {
	if _, err := sink.New(sink.Config{}); err == nil {
		t.Error("empty config accepted")
	}
	if _, err := (sink.Table{Name: "x; DROP TABLE y"}).Schema(); err == nil {
		t.Error("unsafe table name accepted")
	}
	if _, err := (sink.Table{Dialect: sink.Dialect(7)}).Schema(); err == nil {
		t.Error("unknown dialect accepted")
	}
}
