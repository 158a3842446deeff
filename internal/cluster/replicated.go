package cluster

// The catalog as the metadata quorum's state machine.
//
// In a cluster the catalog is not a file: every change is a command
// proposed to the metadata quorum, applied by every node in log order
// (Apply), and the quorum's snapshots are the catalog's file form
// (Snapshot, Restore). The node that proposed a change gets apply's
// result back from its own Apply.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// Proposer hands an encoded command to the metadata quorum and returns
// what this node's Apply returned for it once applied here.
type Proposer func(ctx context.Context, cmd []byte) (any, error)

// proposeTimeout bounds a change waiting for the quorum (no leader, a
// partitioned node): the request fails rather than hangs.
const proposeTimeout = 15 * time.Second

// ErrNoQuorum is a change the metadata quorum did not commit in time.
var ErrNoQuorum = errors.New("the metadata quorum did not commit the change in time")

// applied is Apply's result: the command's result or its error, both
// deterministic.
type applied struct {
	res any
	err error
}

// Replicate makes the catalog a replica of the metadata quorum: from now
// on changes go through propose, and the catalog file is no longer
// written. Call it before the quorum applies anything.
func (c *Catalog) Replicate(propose Proposer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.propose = propose
}

// Replicated reports whether the catalog is a replica of a metadata
// quorum.
func (c *Catalog) Replicated() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.propose != nil
}

func (c *Catalog) proposeCommand(cmd Command) (any, error) {
	data, err := EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	out, err := c.propose(ctx, data)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoQuorum, err)
		}
		return nil, err
	}
	a, ok := out.(applied)
	if !ok {
		return nil, fmt.Errorf("cluster: unexpected apply result %T", out)
	}
	return a.res, a.err
}

// Apply applies one committed command (the quorum's state machine). A
// command that does not decode is refused the same way on every node.
func (c *Catalog) Apply(_ uint64, data []byte) any {
	cmd, err := DecodeCommand(data)
	if err != nil {
		return applied{err: err}
	}
	c.mu.Lock()
	next := c.st.clone()
	res, err := next.apply(cmd)
	if err == nil {
		c.st = next
		if cmd.Op != OpBrokerHeartbeat {
			c.changedLocked()
		}
	} else {
		res = nil // not a typed nil: the proposer type-asserts results
	}
	heard := c.heard
	c.mu.Unlock()
	if err == nil && heard != nil {
		switch cmd.Op {
		case OpBrokerHeartbeat:
			heard(cmd.BrokerID, cmd.BrokerEpoch)
		case OpRegisterBroker:
			// Registering is a sign of life too: without it the
			// controller judged a new registration by its
			// predecessor's last heartbeat and fenced it at once.
			if b, ok := res.(*Broker); ok {
				heard(b.ID, b.Epoch)
			}
		}
	}
	return applied{res: res, err: err}
}

// OnHeartbeat sets the function told of every applied broker heartbeat
// and registration (the controller's liveness clock).
func (c *Catalog) OnHeartbeat(fn func(id int32, epoch int64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heard = fn
}

// Heartbeat records that broker id (of its registration epoch) is alive.
func (c *Catalog) Heartbeat(id int32, epoch int64) error {
	_, err := c.commit(Command{Op: OpBrokerHeartbeat, BrokerID: id, BrokerEpoch: epoch})
	return err
}

// InitCluster sets the cluster id unless one is set, and returns the one
// that stands.
func (c *Catalog) InitCluster(id string) (string, error) {
	res, err := c.commit(Command{Op: OpInitCluster, ClusterID: id})
	if err != nil {
		return "", err
	}
	return res.(string), nil
}

// NewReplica is an empty catalog for a cluster node: its content comes
// from the metadata quorum (Restore, Apply) and its changes go through
// propose.
func NewReplica(static map[string]string, propose Proposer) *Catalog {
	return &Catalog{static: static, st: newState(""), propose: propose}
}

// Snapshot is the catalog's file form.
func (c *Catalog) Snapshot() ([]byte, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.encode()
}

// Restore replaces the catalog by a snapshot.
func (c *Catalog) Restore(data []byte) error {
	st, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("restoring the catalog from a snapshot: %w", err)
	}
	c.mu.Lock()
	c.st = st
	c.changedLocked()
	c.mu.Unlock()
	return nil
}

// Changed returns a channel closed at the catalog's next change.
func (c *Catalog) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

func (c *Catalog) changedLocked() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// Adopt makes the single-node catalog in dir the cluster's, its
// partitions on node (see OpAdopt); ErrAdopted if that happened before.
func (c *Catalog) Adopt(single *Catalog, node int32) error {
	data, err := single.Snapshot()
	if err != nil {
		return err
	}
	_, err = c.commit(Command{Op: OpAdopt, Catalog: data, BrokerID: node})
	return err
}

// AdoptedName is what an adopted single-node catalog file is renamed to:
// kept, never read again.
const AdoptedName = catalogName + ".adopted"

// SingleNodeCatalog reports whether dir holds a single node's catalog
// (cluster.json) not adopted yet.
func SingleNodeCatalog(fsys vfs.FS, dir string) bool {
	_, err := fsys.Stat(filepath.Join(dir, catalogName))
	return err == nil
}

// MarkAdopted renames the adopted catalog file out of the way.
func MarkAdopted(fsys vfs.FS, dir string) error {
	if err := fsys.Rename(filepath.Join(dir, catalogName), filepath.Join(dir, AdoptedName)); err != nil {
		return err
	}
	return fsys.SyncDir(dir)
}
