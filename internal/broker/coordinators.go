package broker

// The coordinators as one unit: the group, transaction and share
// coordinators start together on the node that holds their internal
// topics (on a cluster, the leader of those topics' partitions: see
// coordhost.go) and stop together. They belong together: a transaction's
// offsets complete in the group coordinator, which the transaction
// coordinator calls directly.

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/share"
	"github.com/prometheus/client_golang/prometheus"
)

// coordinators are one running set of the coordinators.
type coordinators struct {
	groups *group.Coordinator
	txn    *txnCoordinator
	share  *share.Coordinator
	// active is true from the load until the unload. A request that
	// found them active may still use them after: stopped coordinators
	// answer COORDINATOR_NOT_AVAILABLE, and the client finds the new ones.
	active atomic.Bool
	// epochs are the leader epochs of their partitions when they loaded
	// (-1: not replicated; nil on a single node).
	epochs []int32
	// stop ends what was started for them (their replicated logs).
	stop func()
}

// stateLogs are the coordinators' internal partitions, as they write them.
type stateLogs struct {
	offsets, txnState, shareState partition.StateLog
}

// coords returns the coordinators this node runs, or ran last: nil only
// before any load. Callers past clusterGate (or a hosting check) use
// them without a nil check.
func (b *Broker) coords() *coordinators { return b.coord.Load() }

// hosting reports whether this node runs the coordinators now.
func (b *Broker) hosting() bool {
	c := b.coord.Load()
	return c != nil && c.active.Load()
}

// loadCoordinators starts the coordinators on logs (replaying them) and
// makes them this node's; the previous set must be unloaded.
func (b *Broker) loadCoordinators(logs stateLogs, epochs []int32, stop func()) error {
	c := &coordinators{epochs: epochs, stop: stop}
	var err error
	if c.groups, err = b.startGroupCoordinator(logs.offsets); err != nil {
		return err
	}
	if c.share, err = b.startShareCoordinator(logs.shareState); err != nil {
		c.groups.Close()
		return err
	}
	// After the groups: finishing a transaction interrupted by a restart
	// may complete offsets staged in a group.
	if c.txn, err = b.startTxnCoordinator(logs.txnState, c.groups); err != nil {
		c.share.Close()
		c.groups.Close()
		return err
	}
	c.active.Store(true)
	b.coord.Store(c)
	return nil
}

// unloadCoordinators stops the running coordinators, if any: the
// transaction coordinator first (completing a transaction may write group
// offsets), then the share and group coordinators.
func (b *Broker) unloadCoordinators() {
	c := b.coord.Load()
	if c == nil || !c.active.CompareAndSwap(true, false) {
		return
	}
	b.stopTxnCoordinator(c.txn)
	c.share.Close()
	c.groups.Close()
	c.stop()
}

// registerCoordinatorMetrics registers the group and share collectors
// once; they report nothing while this node runs no coordinators.
func (b *Broker) registerCoordinatorMetrics() error {
	if b.cfg.Registry == nil {
		return nil
	}
	for _, col := range []prometheus.Collector{&groupCollector{b: b}, &shareCollector{b: b}} {
		if err := b.cfg.Registry.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// startLocalCoordinators opens (creating on first start) the internal
// topics on this node and loads the coordinators on them; on a cluster
// whose internal topics live on another node it loads nothing.
func (b *Broker) startLocalCoordinators() error {
	offsets, err := b.offsetsPartition()
	if errors.Is(err, errNotHere) {
		return nil
	}
	if err != nil {
		return err
	}
	shareState, err := b.shareStatePartition()
	if err != nil {
		return fmt.Errorf("share coordinator: %w", err)
	}
	txnState, err := b.openTxnStateTopic()
	if err != nil {
		return fmt.Errorf("transaction coordinator: %w", err)
	}
	return b.loadCoordinators(stateLogs{offsets: offsets, txnState: txnState, shareState: shareState}, nil, func() {})
}
