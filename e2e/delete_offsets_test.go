package e2e

import (
	"context"
	"testing"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRecreatedTopicDoesNotInheritOffsets: deleting a topic drops its
// committed offsets at once, so a topic re-created under the same name
// starts without them.
func TestRecreatedTopicDoesNotInheritOffsets(t *testing.T) {
	b := exactly.NewTestBroker(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "re"); err != nil {
		t.Fatal(err)
	}
	produceN(t, b.Addr(), "re", 10, 10)
	off := kadm.Offsets{}
	off.AddOffset("re", 0, 7, -1)
	if resp, err := adm.CommitOffsets(ctx, "g", off); err != nil || resp.Error() != nil {
		t.Fatal(err, resp.Error())
	}
	if _, err := adm.DeleteTopics(ctx, "re"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "re"); err != nil {
		t.Fatal(err)
	}
	fetched, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("re", 0); ok && o.At >= 0 {
		t.Fatalf("re-created topic inherited committed offset %d", o.At)
	}
}
