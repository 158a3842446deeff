package verify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/verify"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReadTopicWaitsOutRetriableErrors: a final read that starts before
// its topic is known (UNKNOWN_TOPIC_OR_PARTITION, retriable, as a leader
// election's LEADER_NOT_AVAILABLE is) keeps trying and returns the
// records once the topic is there, instead of failing the run.
func TestReadTopicWaitsOutRetriableErrors(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{})
	cl := client(t, []string{b.Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		fr  verify.FinalRead
		err error
	}
	done := make(chan result, 1)
	go func() {
		fr, err := verify.ReadTopic(ctx, cl, "late", true)
		done <- result{fr, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the read ended before the topic existed: %v", r.err)
	case <-time.After(time.Second):
	}
	createTopic(t, b.Addr(), "late", 1)
	for i := range 3 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "late", Value: fmt.Appendf(nil, "v%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The read may have caught the topic before all three were written;
	// it must have seen the topic and nothing else.
	if recs := r.fr.Records[0]; len(r.fr.Records) != 1 || len(recs) > 3 {
		t.Fatalf("read %v", r.fr.Records)
	}
	for i, rec := range r.fr.Records[0] {
		if rec.Offset != int64(i) || rec.Value != fmt.Sprintf("v%d", i) {
			t.Fatalf("record %d: %+v", i, rec)
		}
	}
}
