package dedup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a RedisStore.
type RedisOptions struct {
	// Prefix is prepended to every key, so several consumers (and tests)
	// share one Redis without colliding. Default "exactly:dedup:".
	Prefix string
	// Retention is how long confirmed ids are remembered. Default
	// DefaultRetention.
	Retention time.Duration
}

// RedisStore is a Store in Redis: a claim is SET NX with the lease as
// expiry (Redis guarantees one winner), Confirm overwrites the value with a
// done marker and the retention as expiry. Redis expires keys itself, so
// Cleanup has nothing to do. Durability is Redis's: without AOF fsync a
// Redis crash forgets recent confirms, and those messages may be applied
// again.
type RedisStore struct {
	c    redis.UniversalClient
	opts RedisOptions
}

// NewRedis returns a store on client; Close does not close client.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *RedisStore {
	if opts.Prefix == "" {
		opts.Prefix = "exactly:dedup:"
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	return &RedisStore{c: client, opts: opts}
}

const doneValue = "\x00done"

// Confirm and Release must only touch the caller's own claim, and the
// compare and the write must be one step, hence scripts.
var (
	confirmScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3]) return 1 end return 0`)
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1]) return 1 end return 0`)
)

// Claim implements Store.
func (s *RedisStore) Claim(ctx context.Context, id string, lease time.Duration) (Status, Claim, error) {
	if lease <= 0 {
		lease = DefaultLease
	}
	key := s.opts.Prefix + id
	for {
		c := Claim{ID: id, Token: newToken()}
		ok, err := s.c.SetNX(ctx, key, c.Token, lease).Result()
		if err != nil {
			return 0, Claim{}, fmt.Errorf("dedup: claim: %w", err)
		}
		if ok {
			return Claimed, c, nil
		}
		v, err := s.c.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			continue // expired or released in between: claim again
		}
		if err != nil {
			return 0, Claim{}, fmt.Errorf("dedup: reading claim: %w", err)
		}
		if v == doneValue {
			return Duplicate, Claim{}, nil
		}
		return InFlight, Claim{}, nil
	}
}

// Confirm implements Store.
func (s *RedisStore) Confirm(ctx context.Context, c Claim) error {
	return s.script(ctx, confirmScript, c, doneValue, s.opts.Retention.Milliseconds())
}

// Release implements Store.
func (s *RedisStore) Release(ctx context.Context, c Claim) error {
	return s.script(ctx, releaseScript, c)
}

func (s *RedisStore) script(ctx context.Context, sc *redis.Script, c Claim, args ...any) error {
	n, err := sc.Run(ctx, s.c, []string{s.opts.Prefix + c.ID}, append([]any{c.Token}, args...)...).Int()
	if err != nil {
		return fmt.Errorf("dedup: %w", err)
	}
	if n != 1 {
		return ErrClaimLost
	}
	return nil
}

// Cleanup implements Store: Redis expires keys itself.
func (s *RedisStore) Cleanup(context.Context, int) (int, error) { return 0, nil }

// Close implements Store; the client stays open.
func (s *RedisStore) Close() error { return nil }
