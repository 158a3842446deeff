package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TestTransientErrors: the final read waits out what a recovering cluster
// answers for a while, wherever kadm or ReadTopic wrapped it, and gives up
// at once on anything else.
func TestTransientErrors(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	shards := func(errs ...error) error {
		se := &kadm.ShardErrors{Name: "ListOffsets"}
		for _, e := range errs {
			se.Errs = append(se.Errs, kadm.ShardError{Err: e})
		}
		return se
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"leader election", kerr.LeaderNotAvailable, true},
		{"wrapped by ReadTopic", fmt.Errorf("end offset of t/0: %w", kerr.NotLeaderForPartition), true},
		{"kadm shard error", shards(kerr.LeaderNotAvailable), true},
		{"kadm shards, all transient", shards(kerr.LeaderNotAvailable, refused), true},
		{"kadm shards, one not", shards(kerr.LeaderNotAvailable, kerr.TopicAuthorizationFailed), false},
		{"kadm shards, none listed", shards(), false},
		{"restarting node", refused, true},
		{"not authorized", kerr.TopicAuthorizationFailed, false},
		{"deadline", context.DeadlineExceeded, false},
		{"anything else", errors.New("stuck at 7 below end 9"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("%s (%v): transient %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
