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

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cluster is several `exactly serve` nodes of one cluster started by this
// process: each a broker and a controller of the metadata quorum, with
// data under dir/node<i> and output in dir/node<i>/logs/broker.log.
type Cluster struct {
	Nodes []*Broker
}

// StartCluster starts n nodes (node.id 1..n) on free loopback ports and
// returns once every one accepts client connections; config ("key=value")
// goes to every node.
func StartCluster(argv, env []string, dir string, n int, config []string) (*Cluster, error) {
	if len(argv) == 0 || n < 1 {
		return nil, fmt.Errorf("a cluster needs a serve command and at least one node")
	}
	c := &Cluster{}
	ctrls := make([]string, n)
	voters := make([]string, n)
	for i := range n {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if ctrls[i], err = freeAddr(); err != nil {
			return nil, err
		}
		voters[i] = fmt.Sprintf("%d@%s", i+1, ctrls[i])
		nodeDir := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		b := &Broker{argv: argv, env: env, addr: addr, listeners: "PLAINTEXT://" + addr + ",CONTROLLER://" + ctrls[i],
			dataDir: filepath.Join(nodeDir, "broker"), logPath: filepath.Join(nodeDir, "logs", "broker.log")}
		for _, d := range []string{b.dataDir, filepath.Dir(b.logPath)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		c.Nodes = append(c.Nodes, b)
	}
	for i, b := range c.Nodes {
		b.config = append([]string{fmt.Sprintf("node.id=%d", i+1), "controller.listener.names=CONTROLLER",
			"controller.quorum.voters=" + strings.Join(voters, ",")}, config...)
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
