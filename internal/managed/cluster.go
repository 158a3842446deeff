package managed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cluster is several `exactly serve` nodes of one cluster started by this
// process: each a broker and a controller of the metadata quorum, with
// data under dir/node<i> and output in dir/node<i>/logs/broker.log.
type Cluster struct {
	Nodes []*Broker
}

// ClusterOptions shape a managed cluster.
type ClusterOptions struct {
	// Config ("key=value") goes to every node.
	Config []string
	// Link, if set, puts something between every two nodes: before any
	// node starts it is called for each ordered pair of nodes (from, to:
	// node ids) and each address of `to` that `from` connects to (its
	// controller listener for the metadata and partition quorums, its
	// listener for requests from `from`), and returns the address `from`
	// is to dial instead, such as a proxy's that forwards to upstream.
	// Every node's traffic to every other then goes through it, on
	// ordinary configuration: per-node controller.quorum.voters, and one
	// listener per peer (NODE<from>) advertised at the returned address,
	// with inter.broker.listener.name picking a node's own.
	Link func(from, to int, upstream string) (string, error)
}

// StartCluster starts n nodes (node.id 1..n) on free loopback ports and
// returns once every one accepts client connections; config ("key=value")
// goes to every node.
func StartCluster(argv, env []string, dir string, n int, config []string) (*Cluster, error) {
	return StartClusterWith(argv, env, dir, n, ClusterOptions{Config: config})
}

// StartClusterWith is StartCluster with options.
func StartClusterWith(argv, env []string, dir string, n int, o ClusterOptions) (*Cluster, error) {
	if len(argv) == 0 || n < 1 {
		return nil, fmt.Errorf("a cluster needs a serve command and at least one node")
	}
	c := &Cluster{}
	// Ports below the ephemeral range (freeport), so that neither o.Link's
	// listeners nor any connection takes one before its node binds it.
	reserve := freeAddr
	ctrls := make([]string, n)
	// peerLns[to][from] is node to's listener for requests from node from.
	peerLns := make([][]string, n)
	for i := range n {
		addr, err := reserve()
		if err != nil {
			return nil, err
		}
		if ctrls[i], err = reserve(); err != nil {
			return nil, err
		}
		listeners := "PLAINTEXT://" + addr + ",CONTROLLER://" + ctrls[i]
		if o.Link != nil {
			peerLns[i] = make([]string, n)
			for from := range n {
				if peerLns[i][from], err = reserve(); err != nil {
					return nil, err
				}
				listeners += fmt.Sprintf(",NODE%d://%s", from+1, peerLns[i][from])
			}
		}
		nodeDir := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		b := &Broker{argv: argv, env: env, addr: addr, listeners: listeners,
			dataDir: filepath.Join(nodeDir, "broker"), logPath: filepath.Join(nodeDir, "logs", "broker.log")}
		for _, d := range []string{b.dataDir, filepath.Dir(b.logPath)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		c.Nodes = append(c.Nodes, b)
	}
	if o.Link == nil {
		voters := make([]string, n)
		for i := range n {
			voters[i] = fmt.Sprintf("%d@%s", i+1, ctrls[i])
		}
		for i, b := range c.Nodes {
			b.config = append([]string{fmt.Sprintf("node.id=%d", i+1), "controller.listener.names=CONTROLLER",
				"controller.quorum.voters=" + strings.Join(voters, ",")}, o.Config...)
		}
	} else if err := c.interpose(o, ctrls, peerLns); err != nil {
		return nil, err
	}
	// Every process first, then the waits: a node listens for clients
	// only once its quorum has a leader, which needs the others running.
	for _, b := range c.Nodes {
		b.mu.Lock()
		_, err := b.startLocked()
		b.mu.Unlock()
		if err != nil {
			c.Stop(time.Second)
			return nil, err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, b := range c.Nodes {
		wg.Go(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if err := b.awaitLocked(); err != nil {
				errs[i] = fmt.Errorf("node %d: %w", i+1, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop(time.Second)
		return nil, err
	}
	if err := c.awaitBrokers(60 * time.Second); err != nil {
		c.Stop(time.Second)
		return nil, err
	}
	return c, nil
}

// interpose configures every node to reach every other through o.Link.
// The nodes' voters lists then differ in addresses, so the cluster id
// cannot be derived from them: every data directory is formatted with one
// new id instead.
func (c *Cluster) interpose(o ClusterOptions, ctrls []string, peerLns [][]string) error {
	n := len(c.Nodes)
	clusterID := cluster.NewClusterID()
	protos := []string{"PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"}
	for i := range n {
		protos = append(protos, fmt.Sprintf("NODE%d:PLAINTEXT", i+1))
	}
	advertised := make([][]string, n) // by node: its NODE<i> listeners' addresses
	for from, b := range c.Nodes {
		voters := make([]string, n)
		for to := range n {
			addr := ctrls[to]
			if to != from {
				var err error
				if addr, err = o.Link(from+1, to+1, ctrls[to]); err != nil {
					return err
				}
				// Node to's listener for node from, as node from reaches it.
				adv, err := o.Link(from+1, to+1, peerLns[to][from])
				if err != nil {
					return err
				}
				advertised[to] = append(advertised[to], fmt.Sprintf("NODE%d://%s", from+1, adv))
			}
			voters[to] = fmt.Sprintf("%d@%s", to+1, addr)
		}
		if err := cluster.Format(vfs.OS(), b.dataDir, clusterID, int32(from+1)); err != nil {
			return err
		}
		b.config = append([]string{fmt.Sprintf("node.id=%d", from+1), "controller.listener.names=CONTROLLER",
			"controller.quorum.voters=" + strings.Join(voters, ","),
			"listener.security.protocol.map=" + strings.Join(protos, ","),
			fmt.Sprintf("inter.broker.listener.name=NODE%d", from+1)}, o.Config...)
	}
	for i, b := range c.Nodes {
		b.config = append(b.config, "advertised.listeners="+strings.Join(advertised[i], ","))
	}
	return nil
}

// awaitBrokers waits until every node's Metadata lists every node: a node
// listens once it registered, but another may not have applied that
// registration yet, and would refuse a topic of replication factor N.
func (c *Cluster) awaitBrokers(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for _, b := range c.Nodes {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
		if err != nil {
			return err
		}
		for {
			m, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl.SeedBrokers()[0])
			if err == nil && len(m.Brokers) == len(c.Nodes) {
				break
			}
			if ctx.Err() != nil {
				cl.Close()
				return fmt.Errorf("%s does not list all %d nodes within %v (last: %v)", b.Addr(), len(c.Nodes), limit, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cl.Close()
	}
	return nil
}

// Addrs are the nodes' client addresses, by node id.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, b := range c.Nodes {
		out[i] = b.Addr()
	}
	return out
}

// PIDs are the nodes' running processes.
func (c *Cluster) PIDs() []int {
	out := make([]int, len(c.Nodes))
	for i, b := range c.Nodes {
		out[i] = b.PID()
	}
	return out
}

// Stop shuts every node down cleanly (SIGTERM, all at once), killing those
// still running after grace.
func (c *Cluster) Stop(grace time.Duration) {
	var wg sync.WaitGroup
	for _, b := range c.Nodes {
		wg.Go(func() { b.Stop(grace) })
	}
	wg.Wait()
}
