package outbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkConcurrentWriters measures outbox writer throughput with 8
// concurrent writers, each on its own aggregate, one event per
// transaction:
//   - "per-aggregate" is Write today: a plain INSERT whose trigger locks
//     only the aggregate's counter row, so the writers do not wait for each
//     other (their commits can share a WAL flush);
//   - "table-lock" is the former Write: a transaction-scoped advisory lock
//     per table before the INSERT, held until commit, so every writer of
//     the table waits for the one before it to commit.
//
// Reported as transactions per second (txn/s).
func BenchmarkConcurrentWriters(b *testing.B) {
	for _, mode := range []string{"per-aggregate", "table-lock"} {
		b.Run(mode, func(b *testing.B) {
			const writers = 8
			ctx := context.Background()
			db, tbl, _ := pgTable(b)
			db.SetMaxOpenConns(writers)
			n, _ := tbl.name()
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < b.N; i += writers {
						tx, err := db.BeginTx(ctx, nil)
						if err != nil {
							errs <- err
							return
						}
						if mode == "table-lock" {
							if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, n); err != nil {
								tx.Rollback()
								errs <- err
								return
							}
						}
						if err := tbl.Write(ctx, tx, &Event{AggregateType: "bench", AggregateID: fmt.Sprint("agg-", w), Type: "T",
							Payload: []byte(`{"amount": 1}`)}); err != nil {
							tx.Rollback()
							errs <- err
							return
						}
						if err := tx.Commit(); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "txn/s")
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		})
	}
}
