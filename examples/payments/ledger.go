package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/exactly/exactly/eos/sink"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Transfer is one payment: amount moves from one account to another. It is
// the JSON value of a record on the transfers topic, keyed by From.
type Transfer struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// generate returns the n transfers of a seed: the same seed always gives the
// same transfers, so a run can be reproduced.
func generate(seed uint64, n, accounts int) []Transfer {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]Transfer, n)
	for i := range out {
		from := r.IntN(accounts)
		to := r.IntN(accounts - 1)
		if to >= from {
			to++ // never to oneself: a self-transfer would be two rows that cancel out
		}
		out[i] = Transfer{
			ID:     fmt.Sprintf("t-%d-%06d", seed, i),
			From:   account(from),
			To:     account(to),
			Amount: 1 + r.Int64N(1000),
		}
	}
	return out
}

func account(i int) string { return fmt.Sprintf("acct-%03d", i) }

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ledger is the database side: its tables live in one PostgreSQL schema.
type ledger struct {
	db     *sql.DB
	schema string
	delay  time.Duration // inside each transaction, to widen crash windows
}

func newLedger(db *sql.DB, schema string) (*ledger, error) {
	if !schemaRE.MatchString(schema) {
		return nil, fmt.Errorf("invalid schema name %q", schema)
	}
	return &ledger{db: db, schema: schema}, nil
}

func (l *ledger) offsets() sink.Table {
	return sink.Table{Name: l.schema + ".sink_offsets", Dialect: sink.Postgres}
}

// create makes the schema and tables if missing. Balances start at zero and
// may go negative: they are net positions, so the final state does not
// depend on the order in which partitions are applied, and a checker can
// compute it from the topic alone. The ledger deliberately has no unique
// key on transfer_id: a duplicate delivery must show up as extra rows, not
// be hidden by a constraint (a production ledger would add UNIQUE
// (transfer_id, account) as a second line of defence).
func (l *ledger) create(ctx context.Context) error {
	s := l.schema
	for _, q := range []string{
		`CREATE SCHEMA IF NOT EXISTS ` + s,
		`CREATE TABLE IF NOT EXISTS ` + s + `.accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + s + `.ledger (
			entry BIGSERIAL PRIMARY KEY,
			transfer_id TEXT NOT NULL,
			account TEXT NOT NULL,
			amount BIGINT NOT NULL,
			kafka_partition INTEGER NOT NULL,
			kafka_offset BIGINT NOT NULL)`,
	} {
		if _, err := l.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
	}
	return l.offsets().CreateSchema(ctx, l.db)
}

// apply is the sink handler: every transfer becomes a debit row and a credit
// row, and both balances move, all in tx, which also stores the offsets.
func (l *ledger) apply(ctx context.Context, tx *sql.Tx, records []*kgo.Record) error {
	var rows []string
	var args []any
	delta := map[string]int64{}
	for _, r := range records {
		var t Transfer
		if err := json.Unmarshal(r.Value, &t); err != nil {
			return fmt.Errorf("record %d/%d: %w", r.Partition, r.Offset, err)
		}
		if t.ID == "" || t.From == "" || t.To == "" || t.From == t.To || t.Amount <= 0 {
			return fmt.Errorf("record %d/%d: invalid transfer %+v", r.Partition, r.Offset, t)
		}
		for _, e := range []struct {
			acct string
			amt  int64
		}{{t.From, -t.Amount}, {t.To, t.Amount}} {
			n := len(args)
			rows = append(rows, fmt.Sprintf("($%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5))
			args = append(args, t.ID, e.acct, e.amt, r.Partition, r.Offset)
			delta[e.acct] += e.amt
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+l.schema+`.ledger (transfer_id, account, amount, kafka_partition, kafka_offset) VALUES `+
		strings.Join(rows, ", "), args...); err != nil {
		return err
	}
	// Balances are updated in account order: concurrent transactions (one
	// per partition) then lock rows in the same order and cannot deadlock.
	accts := make([]string, 0, len(delta))
	for a := range delta {
		accts = append(accts, a)
	}
	sort.Strings(accts)
	for _, a := range accts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+l.schema+`.accounts AS a (id, balance) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET balance = a.balance + excluded.balance`, a, delta[a]); err != nil {
			return err
		}
	}
	if l.delay > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(l.delay):
		}
	}
	return nil
}

// applied counts the distinct transfers in the ledger.
func (l *ledger) applied(ctx context.Context) (int, error) {
	var n int
	err := l.db.QueryRowContext(ctx, `SELECT count(DISTINCT transfer_id) FROM `+l.schema+`.ledger`).Scan(&n)
	return n, err
}

// verify compares the database with the transfers committed to the topic
// (partition → transfers in offset order, with their offsets) and returns
// how many are applied and every violation found. It holds at any moment,
// also while a consumer runs or after one was killed: the applied transfers
// must be exactly those below their partition's stored offset, each as one
// debit and one credit, every balance must equal the sum of the applied
// transfers, and balances must sum to zero. complete additionally requires
// every transfer to be applied. All reads share one snapshot, so a commit
// landing meanwhile cannot look like an inconsistency.
func (l *ledger) verify(ctx context.Context, group string, topic map[int32][]placed, complete bool) (applied int, bad []string, err error) {
	tx, err := l.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return 0, nil, err
	}
	defer tx.Rollback()

	stored := map[int32]int64{}
	rows, err := tx.QueryContext(ctx, `SELECT partition_id, next_offset FROM `+l.schema+`.sink_offsets WHERE consumer_group = $1`, group)
	if err != nil {
		return 0, nil, err
	}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			rows.Close()
			return 0, nil, err
		}
		stored[p] = o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}

	type entry struct {
		acct string
		amt  int64
	}
	got := map[string][]entry{}
	total := 0
	rows, err = tx.QueryContext(ctx, `SELECT transfer_id, account, amount FROM `+l.schema+`.ledger`)
	if err != nil {
		return 0, nil, err
	}
	for rows.Next() {
		var id string
		var e entry
		if err := rows.Scan(&id, &e.acct, &e.amt); err != nil {
			rows.Close()
			return 0, nil, err
		}
		got[id] = append(got[id], e)
		total++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}

	balance := map[string]int64{} // of the transfers that should be applied
	onTopic := map[string]bool{}
	for part, ts := range topic {
		next, ok := stored[part]
		for _, p := range ts {
			if onTopic[p.t.ID] {
				bad = append(bad, fmt.Sprintf("transfer %s is on the topic twice (producer duplicate)", p.t.ID))
			}
			onTopic[p.t.ID] = true
			covered := ok && p.offset < next
			es, isApplied := got[p.t.ID]
			switch {
			case complete && !covered:
				bad = append(bad, fmt.Sprintf("transfer %s at %d/%d not applied yet (stored offset %d)", p.t.ID, part, p.offset, next))
			case covered && !isApplied:
				bad = append(bad, fmt.Sprintf("transfer %s at %d/%d is below the stored offset %d but not applied (lost)", p.t.ID, part, p.offset, next))
			case !covered && isApplied:
				bad = append(bad, fmt.Sprintf("transfer %s at %d/%d is applied but not below the stored offset %d (effect without offset)", p.t.ID, part, p.offset, next))
			}
			if !isApplied {
				continue
			}
			applied++
			if len(es) != 2 {
				bad = append(bad, fmt.Sprintf("transfer %s has %d ledger rows, want 2", p.t.ID, len(es)))
			} else {
				sort.Slice(es, func(i, j int) bool { return es[i].amt < es[j].amt })
				if es[0] != (entry{p.t.From, -p.t.Amount}) || es[1] != (entry{p.t.To, p.t.Amount}) {
					bad = append(bad, fmt.Sprintf("transfer %s has rows %+v, want debit %s and credit %s of %d", p.t.ID, es, p.t.From, p.t.To, p.t.Amount))
				}
			}
			balance[p.t.From] -= p.t.Amount
			balance[p.t.To] += p.t.Amount
		}
	}
	for id := range got {
		if !onTopic[id] {
			bad = append(bad, fmt.Sprintf("transfer %s in the ledger was never committed to the topic", id))
		}
	}
	if total != 2*applied {
		bad = append(bad, fmt.Sprintf("%d ledger rows for %d applied transfers, want 2 per transfer", total, applied))
	}

	rows, err = tx.QueryContext(ctx, `SELECT id, balance FROM `+l.schema+`.accounts`)
	if err != nil {
		return 0, nil, err
	}
	var sum int64
	seen := map[string]bool{}
	for rows.Next() {
		var a string
		var b int64
		if err := rows.Scan(&a, &b); err != nil {
			rows.Close()
			return 0, nil, err
		}
		seen[a] = true
		sum += b
		if b != balance[a] {
			bad = append(bad, fmt.Sprintf("account %s has balance %d, want %d", a, b, balance[a]))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	for a, b := range balance {
		if !seen[a] {
			bad = append(bad, fmt.Sprintf("account %s missing (want balance %d)", a, b))
		}
	}
	if sum != 0 {
		bad = append(bad, fmt.Sprintf("balances sum to %d, want 0 (money created or destroyed)", sum))
	}
	sort.Strings(bad)
	return applied, bad, nil
}

// placed is a transfer read back from the topic, with its offset.
type placed struct {
	t      Transfer
	offset int64
}
