package outbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leadership makes one relay of a name active and the others standbys: a
// PostgreSQL advisory session lock, held on its own connection for as long
// as the relay runs. PostgreSQL releases it when that session ends, which
// for a killed process is as soon as the server sees the connection close.
// Kafka fencing stays the safety net: should two instances ever both run
// (say the lock's connection broke while the old one was mid-batch), only
// the newest can commit.
type Leadership struct {
	conn *pgx.Conn
	lost chan struct{}
	stop context.CancelFunc
	done sync.WaitGroup
}

// LeaderKey is the lock name of a relay: its Kafka transactional id, so a
// polling and a CDC relay of one name do not exclude each other (they
// would not share positions anyway).
func LeaderKey(cdc bool, name string) string {
	if cdc {
		return "exactly-outbox-cdc-" + name
	}
	return "exactly-outbox-relay-" + name
}

// AcquireLeadership connects to dsn and waits until it holds the lock key,
// trying every poll (default 500ms); waiting, if not nil, is called once if
// the first try fails (another instance is active). Afterwards it checks
// the connection every poll and closes Lost when it fails: the lock may be
// gone, so the relay must stop. The take-over time after the active
// instance dies is at most poll plus the time PostgreSQL takes to notice
// the dead session (at once for a closed socket; for a silent network
// failure, its TCP keepalive settings) plus the relay's start.
func AcquireLeadership(ctx context.Context, dsn, key string, poll time.Duration, waiting func()) (*Leadership, error) {
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("outbox: leadership connection: %w", err)
	}
	for first := true; ; first = false {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1)::bigint)`, key).Scan(&ok); err != nil {
			conn.Close(context.Background())
			return nil, fmt.Errorf("outbox: taking the relay lock %s: %w", key, err)
		}
		if ok {
			break
		}
		if first && waiting != nil {
			waiting()
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
	mctx, stop := context.WithCancel(context.Background())
	l := &Leadership{conn: conn, lost: make(chan struct{}), stop: stop}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		for {
			select {
			case <-mctx.Done():
				return
			case <-time.After(poll):
			}
			pctx, cancel := context.WithTimeout(mctx, 5*poll+5*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && mctx.Err() == nil {
				close(l.lost)
				return
			}
		}
	}()
	return l, nil
}

// Lost is closed when the lock's connection fails: stop relaying.
func (l *Leadership) Lost() <-chan struct{} { return l.lost }

// Release gives the lock up (closing its session) so a standby takes over.
func (l *Leadership) Release() {
	l.stop()
	l.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.conn.Close(ctx)
}
