package ctp_test

import (
	"context"
	"errors"
	"log"
	"os/signal"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/exactly/exactly/eos/ctp"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Upper-case every order into orders.upper; records that are not UTF-8
// text cannot be fixed by retrying, so they go to the dead-letter topic at
// once. SIGTERM ends (or aborts) the transaction in progress and leaves the
// group.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	p, err := ctp.New(ctp.Config{
		Kafka:           []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")},
		Group:           "upper",
		Topics:          []string{"orders"},
		TransactionalID: "upper-0", // one per instance, the same after a restart
		OutputTopic:     "orders.upper",
		DeadLetterTopic: "orders.dlq",
		Transform: func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
			if !utf8.Valid(r.Value) {
				return nil, ctp.Permanent(errors.New("value is not UTF-8"))
			}
			return []*kgo.Record{{Key: r.Key, Value: []byte(strings.ToUpper(string(r.Value)))}}, nil
		},
		OnError: func(err error) { log.Print(err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
