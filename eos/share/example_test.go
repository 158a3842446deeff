package share_test

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"os/signal"
	"syscall"

	"github.com/exactly/exactly/eos/share"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Send every e-mail queued on the "emails" topic, any number of workers
// sharing the work. A record that is not JSON can never be sent: it goes to
// emails.dlq at once. A mail server that keeps failing is retried on
// another delivery, and after the group's delivery-count limit the record
// goes to emails.dlq too. SIGTERM releases what this worker holds and
// leaves the group.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c, err := share.New(share.Config{
		Kafka:           []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")},
		Group:           "mailers",
		Topics:          []string{"emails"},
		DeadLetterTopic: "emails.dlq",
		Handler: func(ctx context.Context, r *kgo.Record) error {
			var mail struct{ To, Subject, Body string }
			if err := json.Unmarshal(r.Value, &mail); err != nil {
				return share.Permanent(err)
			}
			return send(ctx, mail.To, mail.Subject, mail.Body) // retried on a later delivery
		},
		OnError: func(err error) { log.Print(err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func send(ctx context.Context, to, subject, body string) error { return nil }
