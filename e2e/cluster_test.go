package e2e

// End-to-end tests of a three-node cluster of `exactly serve` processes
// (docs/DESIGN.md, "Metadata quorum"): topic churn while nodes are
// SIGKILLed, every node's view of the cluster, and records produced
// through one node and consumed through another across a node's death.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// clusterElectionTimeout is controller.quorum.election.timeout.ms in these
// tests, set explicitly because the controller's failover is measured
// against it.
const clusterElectionTimeout = time.Second

// nodeClient is a franz-go client seeded with one node only.
func nodeClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.DialTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// nodeClients is one nodeClient per node, in node order.
func nodeClients(t *testing.T, nodes []*clusterNode, opts ...kgo.Opt) []*kgo.Client {
	t.Helper()
	cls := make([]*kgo.Client, len(nodes))
	for i, n := range nodes {
		cls[i] = nodeClient(t, n.addr, opts...)
	}
	return cls
}

// seed is the connection to the node a client is seeded with: requests
// sent on it are answered by that node, never routed to another.
func seed(cl *kgo.Client) *kgo.Broker { return cl.SeedBrokers()[0] }

// clusterView is what one node's Metadata answer says about the cluster.
type clusterView struct {
	controller int32
	// brokers are the listed broker ids, sorted.
	brokers []int32
	topics  map[string]topicView
	// repeated are topic names listed more than once.
	repeated []string
}

// topicView is one topic of a Metadata answer.
type topicView struct {
	id       [16]byte
	leaders  []int32   // by partition
	replicas [][]int32 // by partition
}

// metadataOf asks the node cl is seeded with for the metadata of every
// topic.
func metadataOf(ctx context.Context, cl *kgo.Client) (clusterView, error) {
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, seed(cl))
	if err != nil {
		return clusterView{}, err
	}
	v := clusterView{controller: resp.ControllerID, topics: map[string]topicView{}}
	for _, b := range resp.Brokers {
		v.brokers = append(v.brokers, b.NodeID)
	}
	slices.Sort(v.brokers)
	for _, rt := range resp.Topics {
		if rt.Topic == nil {
			return clusterView{}, fmt.Errorf("a topic without a name (id %x)", rt.TopicID)
		}
		name := *rt.Topic
		if _, ok := v.topics[name]; ok {
			v.repeated = append(v.repeated, name)
		}
		tv := topicView{id: rt.TopicID, leaders: make([]int32, len(rt.Partitions)), replicas: make([][]int32, len(rt.Partitions))}
		seen := make([]bool, len(rt.Partitions))
		for _, p := range rt.Partitions {
			if p.Partition < 0 || int(p.Partition) >= len(seen) || seen[p.Partition] {
				return clusterView{}, fmt.Errorf("topic %s lists partition %d among %d partitions", name, p.Partition, len(seen))
			}
			seen[p.Partition] = true
			tv.leaders[p.Partition] = p.Leader
			tv.replicas[p.Partition] = p.Replicas
		}
		v.topics[name] = tv
	}
	return v, nil
}

// describe prints a view for a failure message, topics sorted by name.
func (v clusterView) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "controller %d, brokers %v, repeated %v, topics:", v.controller, v.brokers, v.repeated)
	names := make([]string, 0, len(v.topics))
	for name := range v.topics {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tv := v.topics[name]
		fmt.Fprintf(&b, " %s(%x leaders %v)", name, tv.id[:4], tv.leaders)
	}
	return b.String()
}

// offline is a partition of the view without a leader, "" if none is.
func (v clusterView) offline() string {
	for name, tv := range v.topics {
		for p, l := range tv.leaders {
			if l < 0 {
				return fmt.Sprintf("%s-%d", name, p)
			}
		}
	}
	return ""
}

// waitConverged waits (up to limit) until every node answers Metadata
// with all of nodes as brokers and the same topics, topic ids and
// leaders, no partition offline and no name twice; it returns that view.
func waitConverged(t *testing.T, nodes []*clusterNode, probes []*kgo.Client, limit time.Duration) clusterView {
	t.Helper()
	var want []int32
	for _, n := range nodes {
		want = append(want, n.id)
	}
	deadline := time.Now().Add(limit)
	for {
		views := make([]clusterView, len(probes))
		why := ""
		for i, cl := range probes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			v, err := metadataOf(ctx, cl)
			cancel()
			views[i] = v
			switch {
			case err != nil:
				why = fmt.Sprintf("node %d: %v", nodes[i].id, err)
			case !slices.Equal(v.brokers, want):
				why = fmt.Sprintf("node %d lists brokers %v, want %v", nodes[i].id, v.brokers, want)
			case len(v.repeated) > 0:
				why = fmt.Sprintf("node %d lists %v more than once", nodes[i].id, v.repeated)
			case v.offline() != "":
				why = fmt.Sprintf("node %d has %s offline", nodes[i].id, v.offline())
			case i > 0 && !reflect.DeepEqual(v.topics, views[0].topics):
				why = fmt.Sprintf("node %d and node %d disagree", nodes[0].id, nodes[i].id)
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return views[0]
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for i, v := range views {
				fmt.Fprintf(&b, "\nnode %d: %s", nodes[i].id, v.describe())
			}
			t.Fatalf("the nodes did not converge within %v: %s%s", limit, why, b.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startServingCluster starts three nodes (startCluster), dumps their logs
// if the test fails, and waits until each serves; probes[i] is a client
// of node i alone.
func startServingCluster(t *testing.T, sets ...string) ([]*clusterNode, []*kgo.Client) {
	t.Helper()
	nodes := startCluster(t, sets...)
	dumpLogsOnFailure(t, nodes)
	probes := nodeClients(t, nodes)
	for i, n := range nodes {
		waitServing(t, n, probes[i])
	}
	return nodes, probes
}

// waitServing waits (up to a minute) until node n answers Metadata naming
// a controller, and returns that answer.
func waitServing(t *testing.T, n *clusterNode, probe *kgo.Client) clusterView {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := metadataOf(ctx, probe)
		cancel()
		if err == nil && v.controller > 0 {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d names no controller a minute after its start (last answer: %v, %v):\n%s",
				n.id, err, v.describe(), tailFile(n.logs[len(n.logs)-1]))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dumpLogsOnFailure prints the end of every node's logs if the test
// failed: the evidence of what the nodes did.
func dumpLogsOnFailure(t *testing.T, nodes []*clusterNode) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		keep := os.Getenv("EXACTLY_KEEP_LOGS") // a directory to copy whole logs to
		for _, n := range nodes {
			for i, path := range n.logs {
				t.Logf("node %d, process %d (%s):\n%s", n.id, i+1, path, tailFile(path))
				if keep != "" {
					if b, err := os.ReadFile(path); err == nil {
						os.WriteFile(filepath.Join(keep, fmt.Sprintf("%s-node%d-%d.log", t.Name(), n.id, i+1)), b, 0o644)
					}
				}
			}
		}
	})
}

// partitionDirs are the partition directories in a node's data directory
// (its own files left out).
func partitionDirs(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range entries {
		if !cluster.IsDataDirFile(e.Name()) {
			out[e.Name()] = true
		}
	}
	return out, nil
}

// topicOp is one create or delete of the churn, as the client saw it.
type topicOp struct {
	create     bool
	partitions int32
	// acked: answered without error. Otherwise the operation is
	// uncertain: it may have taken effect, or may still.
	acked bool
	// id is an acknowledged create's topic id.
	id [16]byte
	// node is the node the client was seeded with; routed, whether the
	// client routed the request (to the controller) rather than send it
	// to that node.
	node   int32
	routed bool
	err    error
}

// topicLedger is every operation of the churn, by topic name. Each name
// belongs to one worker, which issues its operations one at a time and
// never touches a name again after an uncertain operation on it: a
// request that timed out may still be applied later, after any
// operation issued after it.
type topicLedger struct {
	mu  sync.Mutex
	ops map[string][]topicOp
}

func (l *topicLedger) record(name string, op topicOp) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[name] = append(l.ops[name], op)
}

// check compares the ledger with the cluster's final topics and returns
// what contradicts it.
func (l *topicLedger) check(final map[string]topicView) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for name, ops := range l.ops {
		got, exists := final[name]
		last := -1
		for i, op := range ops {
			if op.acked {
				last = i
			}
		}
		uncertain := ops[last+1:] // at most one: the name was retired
		switch {
		case len(uncertain) > 0:
			// Either outcome is allowed; a topic that exists must be one
			// that some create asked for.
			if exists && !slices.ContainsFunc(ops, func(op topicOp) bool {
				return op.create && int(op.partitions) == len(got.leaders)
			}) {
				bad = append(bad, fmt.Sprintf("%s exists with %d partitions, which no create asked for", name, len(got.leaders)))
			}
		case ops[last].create && !exists:
			bad = append(bad, fmt.Sprintf("%s is gone, but its last operation, an acknowledged create through node %d, was not followed by any", name, ops[last].node))
		case ops[last].create && got.id != ops[last].id:
			bad = append(bad, fmt.Sprintf("%s has topic id %x, its acknowledged create answered %x", name, got.id, ops[last].id))
		case ops[last].create && len(got.leaders) != int(ops[last].partitions):
			bad = append(bad, fmt.Sprintf("%s has %d partitions, its acknowledged create asked for %d", name, len(got.leaders), ops[last].partitions))
		case !ops[last].create && exists:
			bad = append(bad, fmt.Sprintf("%s exists (id %x), but its last operation was an acknowledged delete through node %d", name, got.id, ops[last].node))
		}
	}
	for name := range final {
		if _, ok := l.ops[name]; !ok && !strings.HasPrefix(name, "__") {
			bad = append(bad, fmt.Sprintf("%s exists, but nobody created it", name))
		}
	}
	sort.Strings(bad)
	return bad
}

// counts are the acknowledged creates and deletes and the uncertain
// operations of the ledger, and the acknowledged operations sent to each
// node itself (not routed).
func (l *topicLedger) counts() (creates, deletes, uncertain int, direct map[int32]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	direct = map[int32]int{}
	for _, ops := range l.ops {
		for _, op := range ops {
			if op.acked && !op.routed {
				direct[op.node]++
			}
			switch {
			case !op.acked:
				uncertain++
			case op.create:
				creates++
			default:
				deletes++
			}
		}
	}
	return
}

// createThrough creates a topic through a client seeded with one node:
// routed by the client (to the controller it learns from that node) when
// routed is set, else sent to that node itself.
func createThrough(ctx context.Context, cl *kgo.Client, routed bool, name string, partitions int32) topicOp {
	op := topicOp{create: true, partitions: partitions}
	if routed {
		r, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, name)
		op.acked, op.id, op.err = err == nil, r.ID, err
		return op
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 8000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, partitions, 1
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, seed(cl))
	switch {
	case err != nil:
		op.err = err
	case len(resp.Topics) != 1:
		op.err = fmt.Errorf("%d topics in the answer", len(resp.Topics))
	default:
		op.err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
		op.acked, op.id = op.err == nil, resp.Topics[0].TopicID
	}
	return op
}

// deleteThrough deletes a topic the way createThrough creates one.
func deleteThrough(ctx context.Context, cl *kgo.Client, routed bool, name string) topicOp {
	op := topicOp{}
	if routed {
		_, err := kadm.NewClient(cl).DeleteTopic(ctx, name)
		op.acked, op.err = err == nil, err
		return op
	}
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 8000
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(name)
	req.Topics = append(req.Topics, rt)
	req.TopicNames = append(req.TopicNames, name)
	resp, err := req.RequestWith(ctx, seed(cl))
	switch {
	case err != nil:
		op.err = err
	case len(resp.Topics) != 1:
		op.err = fmt.Errorf("%d topics in the answer", len(resp.Topics))
	default:
		op.err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
		op.acked = op.err == nil
	}
	return op
}

// churnTopics creates and deletes topics of worker w (1 to 6 partitions,
// at most four alive, names sometimes reused after an acknowledged
// delete) through each node in turn until stop closes.
func churnTopics(w int, nodes []*clusterNode, cls []*kgo.Client, l *topicLedger, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var live, reusable []string
	take := func(s *[]string) string {
		i := rng.IntN(len(*s))
		name := (*s)[i]
		*s = slices.Delete(*s, i, i+1)
		return name
	}
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		i := (w + n) % len(nodes)
		routed := n%2 == 0
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var name string
		var op topicOp
		if len(live) > 0 && (len(live) >= 4 || rng.IntN(2) == 0) {
			name = take(&live)
			op = deleteThrough(ctx, cls[i], routed, name)
		} else {
			if len(reusable) > 0 && rng.IntN(2) == 0 {
				name = take(&reusable)
			} else {
				name = fmt.Sprintf("churn-%d-%d-%04x", w, n, rng.IntN(1<<16))
			}
			op = createThrough(ctx, cls[i], routed, name, int32(1+rng.IntN(6)))
		}
		cancel()
		op.node, op.routed = nodes[i].id, routed
		l.record(name, op)
		switch {
		case !op.acked:
			time.Sleep(100 * time.Millisecond) // a node down answers at once: do not spin
		case op.create:
			live = append(live, name)
		default:
			reusable = append(reusable, name)
		}
	}
}

// TestClusterConvergesUnderSIGKILL: workers create and delete topics
// through every node while nodes are SIGKILLed (the controller among
// them) and restarted on their data. Afterwards every node lists the same
// topics with the same ids and leaders, the acknowledged operations
// hold, and no node keeps a directory of a partition it does not lead.
// After each kill of the controller a surviving node names another one
// within 10 election timeouts: a generous bound (a loaded 2-core machine)
// that still fails if the controller never moves.
func TestClusterConvergesUnderSIGKILL(t *testing.T) {
	testenv.SkipShort(t, "subprocess test of a three-node cluster")
	t.Parallel() // owns its nodes
	nodes, probes := startServingCluster(t,
		fmt.Sprintf("controller.quorum.election.timeout.ms=%d", clusterElectionTimeout.Milliseconds()),
		"broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500")

	l := &topicLedger{ops: map[string][]topicOp{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		cls := nodeClients(t, nodes, kgo.RetryTimeout(8*time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			churnTopics(w, nodes, cls, l, stop)
		}()
	}
	stopped := false
	stopChurn := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopChurn()

	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	start := time.Now()
	kills, controllerKills := 0, 0
	moveLimit := 10 * clusterElectionTimeout
	for time.Since(start) < 15*time.Second || kills < 5 || controllerKills < 2 {
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("only %d kills (%d of the controller) in 3 minutes", kills, controllerKills)
		}
		time.Sleep(1500*time.Millisecond + time.Duration(rng.IntN(1500))*time.Millisecond)
		// Every node is up and named a controller (waitServing after
		// each restart); ask one at random who it is.
		i := rng.IntN(len(nodes))
		controller := waitServing(t, nodes[i], probes[i]).controller
		victim := nodes[rng.IntN(len(nodes))]
		if controllerKills < 2 && (kills >= 3 || rng.IntN(2) == 0) {
			victim = nodes[controller-1]
		}
		victim.p.kill()
		kills++
		killed := time.Now()
		if victim.id == controller {
			controllerKills++
			took, by, now := waitControllerMoved(nodes, probes, victim.id, 6*moveLimit)
			if now <= 0 {
				t.Errorf("kill %d of controller %d: no surviving node named another controller within %v", kills, victim.id, 6*moveLimit)
			} else {
				t.Logf("kill %d of controller %d: node %d named controller %d after %v", kills, victim.id, by, now, took.Round(time.Millisecond))
				if took > moveLimit {
					t.Errorf("kill %d of controller %d: the controller moved after %v, more than 10 election timeouts (%v)", kills, victim.id, took, moveLimit)
				}
			}
		} else {
			// Down for up to a little more than the session timeout:
			// sometimes fenced, its partitions offline and new ones
			// placed elsewhere; topics deleted meanwhile leave
			// directories it must remove when back.
			down := time.Duration(rng.IntN(4000)) * time.Millisecond
			t.Logf("kill %d of node %d (controller %d), down for %v", kills, victim.id, controller, down)
			time.Sleep(down)
		}
		startClusterNode(t, victim)
		waitServing(t, victim, probes[victim.id-1])
		t.Logf("node %d serves again %v after its kill", victim.id, time.Since(killed).Round(time.Millisecond))
	}
	stopChurn()
	creates, deletes, uncertain, direct := l.counts()
	t.Logf("%d kills (%d of the controller) in %v; %d acknowledged creates, %d acknowledged deletes (sent to the node itself, by node: %v), %d uncertain",
		kills, controllerKills, time.Since(start).Round(time.Second), creates, deletes, direct, uncertain)
	if creates == 0 || deletes == 0 {
		t.Fatalf("the churn had %d acknowledged creates and %d deletes: it tested nothing", creates, deletes)
	}
	for _, n := range nodes {
		if direct[n.id] == 0 {
			t.Errorf("no create or delete sent to node %d itself was acknowledged: a node that is not the controller should take them (the quorum forwards proposals)", n.id)
		}
	}

	final := waitConverged(t, nodes, probes, time.Minute)
	for _, bad := range l.check(final.topics) {
		t.Error(bad)
	}
	checkPartitionDirs(t, nodes, final, 30*time.Second)
}

// TestClusterRemovesTornPartitionDir: a node SIGKILLed while it creates
// a partition directory can leave it holding only the marker's temporary
// file (the marker is written to partition.metadata.tmp, then renamed).
// When that topic is deleted, the node must still remove the directory
// (it once left it for good: partition.RemoveDir recognised only a
// renamed marker). TestClusterConvergesUnderSIGKILL met this state from
// real kills; this test builds it directly: the node is killed after its
// partition is created, and its directory is put back in the state such
// a kill leaves (the marker's content, not yet renamed, and nothing else).
func TestClusterRemovesTornPartitionDir(t *testing.T) {
	testenv.SkipShort(t, "subprocess test of a three-node cluster")
	t.Parallel() // owns its nodes
	nodes, probes := startServingCluster(t,
		fmt.Sprintf("controller.quorum.election.timeout.ms=%d", clusterElectionTimeout.Milliseconds()),
		"broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const topic = "torn"
	if _, err := kadm.NewClient(probes[0]).CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	view := waitConverged(t, nodes, probes, time.Minute)
	victim, index := (*clusterNode)(nil), -1
	for p, l := range view.topics[topic].leaders {
		if l != nodes[0].id {
			victim, index = nodes[l-1], p
			break
		}
	}
	if victim == nil {
		t.Fatalf("every partition of %s is on node 1: %v", topic, view.topics[topic].leaders)
	}
	dir := filepath.Join(victim.dir, topic+"-"+strconv.Itoa(index))
	victim.p.kill()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if e.Name() == partition.MarkerName {
			err = os.Rename(path, path+".tmp")
		} else {
			err = os.RemoveAll(path)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !tornAtCreation(dir) {
		t.Fatalf("%s is not in the state a kill during its creation leaves", dir)
	}
	if _, err := kadm.NewClient(probes[0]).DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	startClusterNode(t, victim)
	view = waitConverged(t, nodes, probes, time.Minute)
	if _, ok := view.topics[topic]; ok {
		t.Fatalf("%s still listed after its deletion was acknowledged", topic)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d keeps %s of the deleted topic %s 30s after its restart%s",
				victim.id, dir, topic, dirEvidence(victim, filepath.Base(dir)))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitControllerMoved polls the nodes other than gone until one names a
// controller other than gone, up to limit; it returns how long that took,
// which node said so and whom it named (0 if none did).
func waitControllerMoved(nodes []*clusterNode, probes []*kgo.Client, gone int32, limit time.Duration) (time.Duration, int32, int32) {
	start := time.Now()
	for time.Since(start) < limit {
		for i, n := range nodes {
			if n.id == gone {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			v, err := metadataOf(ctx, probes[i])
			cancel()
			if err == nil && v.controller > 0 && v.controller != gone {
				return time.Since(start), n.id, v.controller
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start), 0, 0
}

// checkPartitionDirs waits (up to limit) until every node's data
// directory holds exactly the directories of the partitions it leads in
// view (it holds a replica of: the coordinators' topics are replicated),
// and fails with the difference otherwise.
func checkPartitionDirs(t *testing.T, nodes []*clusterNode, view clusterView, limit time.Duration) {
	t.Helper()
	want := map[int32]map[string]bool{}
	for _, n := range nodes {
		want[n.id] = map[string]bool{}
	}
	for name, tv := range view.topics {
		for p, leader := range tv.leaders {
			holders := []int32{leader}
			if len(tv.replicas[p]) > 1 {
				holders = tv.replicas[p]
			}
			for _, h := range holders {
				if want[h] == nil {
					t.Fatalf("%s-%d is held by %d, not a node of the cluster", name, p, h)
				}
				want[h][name+"-"+strconv.Itoa(p)] = true
			}
		}
	}
	type leftover struct {
		n   *clusterNode
		dir string
	}
	deadline := time.Now().Add(limit)
	for {
		var extra []leftover
		var missing []string
		for _, n := range nodes {
			got, err := partitionDirs(n.dir)
			if err != nil {
				t.Fatal(err)
			}
			for d := range got {
				switch {
				case want[n.id][d]:
				default:
					extra = append(extra, leftover{n, d})
				}
			}
			for d := range want[n.id] {
				if !got[d] {
					missing = append(missing, fmt.Sprintf("node %d leads %s but has no directory for it", n.id, d))
				}
			}
		}
		if len(extra) == 0 && len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, l := range extra {
				missing = append(missing, fmt.Sprintf("node %d holds %s, which it does not lead%s", l.n.id, l.dir, dirEvidence(l.n, l.dir)))
			}
			sort.Strings(missing)
			t.Fatalf("data directories still differ from the partitions each node leads after %v:\n%s", limit, strings.Join(missing, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tornAtCreation reports whether a partition directory holds nothing but
// an unrenamed marker: what a SIGKILL in the middle of creating it
// leaves.
func tornAtCreation(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 1 && entries[0].Name() == partition.MarkerName+".tmp"
}

// dirEvidence is what explains a leftover directory d of node n: the
// files in it and every line of the node's logs that names it.
func dirEvidence(n *clusterNode, d string) string {
	var b strings.Builder
	entries, err := os.ReadDir(filepath.Join(n.dir, d))
	fmt.Fprintf(&b, "\n  files:")
	for _, e := range entries {
		info, _ := e.Info()
		size := int64(-1)
		if info != nil {
			size = info.Size()
		}
		fmt.Fprintf(&b, " %s (%d bytes)", e.Name(), size)
	}
	if err != nil {
		fmt.Fprintf(&b, " (%v)", err)
	}
	topic := d[:strings.LastIndexByte(d, '-')]
	for i, path := range n.logs {
		for _, line := range strings.Split(readFile(path), "\n") {
			if strings.Contains(line, d) || strings.Contains(line, "topic="+topic+" ") {
				fmt.Fprintf(&b, "\n  process %d: %s", i+1, line)
			}
		}
	}
	return b.String()
}

// kcatMetadata is the part of `kcat -L -J` this test reads.
type kcatMetadata struct {
	Brokers []struct {
		ID   int32  `json:"id"`
		Name string `json:"name"`
	} `json:"brokers"`
	Topics []struct {
		Topic      string `json:"topic"`
		Partitions []struct {
			Partition int32 `json:"partition"`
			Leader    int32 `json:"leader"`
		} `json:"partitions"`
	} `json:"topics"`
}

// TestClusterKcatListsBrokers: librdkafka's metadata from each node of a
// three-node cluster lists all three brokers at their addresses and a
// leader among them for each partition of a six-partition topic, the
// leaders spread over more than one node.
func TestClusterKcatListsBrokers(t *testing.T) {
	testenv.SkipShort(t, "subprocess test of a three-node cluster")
	testenv.RequireTool(t, "kcat", "apt-get install -y kcat")
	kcat, _ := exec.LookPath("kcat")
	t.Parallel() // owns its nodes
	nodes, probes := startServingCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(probes[0]).CreateTopic(ctx, 6, 1, nil, "kc"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, nodes, probes, time.Minute)

	wantBrokers := map[int32]string{}
	for _, n := range nodes {
		wantBrokers[n.id] = n.addr
	}
	for _, n := range nodes {
		out, err := exec.Command(kcat, "-L", "-J", "-b", n.addr, "-t", "kc", "-m", "30").Output()
		if err != nil {
			t.Fatalf("kcat -L -b %s: %v\n%s", n.addr, err, out)
		}
		var md kcatMetadata
		if err := json.Unmarshal(out, &md); err != nil {
			t.Fatalf("kcat -L -J -b %s printed %q: %v", n.addr, out, err)
		}
		got := map[int32]string{}
		for _, b := range md.Brokers {
			got[b.ID] = b.Name
		}
		// librdkafka names a broker host:port/id.
		for id, addr := range wantBrokers {
			if name, ok := got[id]; !ok || !strings.HasPrefix(name, addr) {
				t.Errorf("kcat through node %d: broker %d is %q, want %s (brokers: %v)", n.id, id, name, addr, got)
			}
		}
		if len(got) != len(wantBrokers) {
			t.Errorf("kcat through node %d lists brokers %v, want %v", n.id, got, wantBrokers)
		}
		if len(md.Topics) != 1 || md.Topics[0].Topic != "kc" || len(md.Topics[0].Partitions) != 6 {
			t.Fatalf("kcat through node %d: topics %+v, want kc with 6 partitions", n.id, md.Topics)
		}
		leaders := map[int32]bool{}
		for _, p := range md.Topics[0].Partitions {
			if _, ok := wantBrokers[p.Leader]; !ok {
				t.Errorf("kcat through node %d: kc-%d has leader %d, not one of the brokers", n.id, p.Partition, p.Leader)
			}
			leaders[p.Leader] = true
		}
		if len(leaders) < 2 {
			t.Errorf("kcat through node %d: every partition of kc is led by %v; placement should spread them", n.id, leaders)
		}
	}
}

// producedAt is where an acknowledged record was written.
type producedAt struct {
	partition int32
	offset    int64
}

// TestClusterProduceConsumeAcrossNodes: records produced (acks=all,
// idempotent) through a client that knows only node 1 are consumed
// exactly once, in order per partition, by a group member that knows
// only node 3. A partition's node is then SIGKILLed: Metadata shows that
// partition offline after broker.session.timeout.ms while the other
// partitions still take records; restarted, the node takes records
// again and everything acknowledged reads back at its offset.
func TestClusterProduceConsumeAcrossNodes(t *testing.T) {
	testenv.SkipShort(t, "subprocess test of a three-node cluster")
	t.Parallel() // owns its nodes
	const session = 3 * time.Second
	nodes, probes := startServingCluster(t,
		fmt.Sprintf("controller.quorum.election.timeout.ms=%d", clusterElectionTimeout.Milliseconds()),
		fmt.Sprintf("broker.session.timeout.ms=%d", session.Milliseconds()), "broker.heartbeat.interval.ms=500")
	const topic, partitions, records = "across", 6, 3000
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := kadm.NewClient(probes[0]).CreateTopic(ctx, partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	view := waitConverged(t, nodes, probes, time.Minute)

	acked := map[string]producedAt{} // value → where
	var ackedMu sync.Mutex
	producer := nodeClient(t, nodes[0].addr, kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))
	produce := func(ctx context.Context, what string, values []string, partition func(i int) int32) {
		t.Helper()
		recs := make([]*kgo.Record, len(values))
		for i, v := range values {
			recs[i] = &kgo.Record{Value: []byte(v), Partition: partition(i)}
		}
		if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		ackedMu.Lock()
		defer ackedMu.Unlock()
		for _, r := range recs {
			acked[string(r.Value)] = producedAt{r.Partition, r.Offset}
		}
	}
	first := make([]string, records)
	for i := range first {
		first[i] = fmt.Sprintf("r%05d", i)
	}
	produce(ctx, "producing through node 1", first, func(i int) int32 { return int32(i % partitions) })

	consumer, err := kgo.NewClient(kgo.SeedBrokers(nodes[2].addr), kgo.ConsumerGroup("across-group"), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	closeConsumer := sync.OnceFunc(consumer.Close)
	t.Cleanup(closeConsumer)
	seen := map[string]producedAt{}
	lastOffset := map[int32]int64{}
	for len(seen) < records {
		fetches := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records through node 3 before the deadline", len(seen), records)
		}
		for _, fe := range fetches.Errors() {
			t.Logf("fetch through node 3: %s-%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if prev, dup := seen[v]; dup {
				t.Fatalf("%s consumed twice: at %s-%d@%d and %d@%d", v, topic, prev.partition, prev.offset, r.Partition, r.Offset)
			}
			if last, ok := lastOffset[r.Partition]; ok && r.Offset <= last {
				t.Fatalf("partition %d went from offset %d to %d", r.Partition, last, r.Offset)
			}
			lastOffset[r.Partition] = r.Offset
			seen[v] = producedAt{r.Partition, r.Offset}
			if want, ok := acked[v]; !ok || want != seen[v] {
				t.Fatalf("consumed %s at %d@%d, produced at %+v (acknowledged: %v)", v, r.Partition, r.Offset, want, ok)
			}
		})
	}
	// Offsets increase per partition and each record sits where it was
	// acknowledged: so the per-partition order is the produce order.
	closeConsumer()

	// The node leading a partition dies; node 1 (the seed of both
	// clients and the coordinators' node) stays.
	victim, lost := int32(-1), int32(-1)
	for p, l := range view.topics[topic].leaders {
		if l != nodes[0].id {
			victim, lost = l, int32(p)
			break
		}
	}
	if victim < 0 {
		t.Fatalf("every partition of %s is on node 1: %v", topic, view.topics[topic].leaders)
	}
	n := nodes[victim-1]
	n.p.kill()
	killed := time.Now()
	waitFor(t, session+time.Minute, fmt.Sprintf("%s-%d offline in node 1's Metadata after node %d's kill", topic, lost, victim), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, err := metadataOf(ctx, probes[0])
		return err == nil && len(v.topics[topic].leaders) == partitions && v.topics[topic].leaders[lost] == -1
	})
	t.Logf("%s-%d offline %v after node %d's kill", topic, lost, time.Since(killed).Round(time.Millisecond), victim)
	var others []int32
	for p, l := range view.topics[topic].leaders {
		if l != victim {
			others = append(others, int32(p))
		}
	}
	during := make([]string, 300)
	for i := range during {
		during[i] = fmt.Sprintf("d%05d", i)
	}
	produce(ctx, "producing to the partitions of the surviving nodes", during, func(i int) int32 { return others[i%len(others)] })

	startClusterNode(t, n)
	waitConverged(t, nodes, probes, time.Minute)
	after := make([]string, 100)
	for i := range after {
		after[i] = fmt.Sprintf("a%05d", i)
	}
	produce(ctx, fmt.Sprintf("producing to %s-%d after node %d's restart", topic, lost, victim), after, func(int) int32 { return lost })

	checkAllRead(t, nodes[1].addr, topic, acked)
}

// checkAllRead reads every partition of topic from the start through a
// client seeded with addr and fails unless each acknowledged record is
// at the offset it was acknowledged with.
func checkAllRead(t *testing.T, addr, topic string, acked map[string]producedAt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	byOffset := map[producedAt]string{}
	ends := map[int32]int64{}
	for v, at := range acked {
		byOffset[at] = v
		ends[at.partition] = max(ends[at.partition], at.offset+1)
	}
	cl := nodeClient(t, addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	found := 0
	next := map[int32]int64{} // the offset after the last read, by partition
	reached := func() bool {
		for p, end := range ends {
			if next[p] < end {
				return false
			}
		}
		return true
	}
	for !reached() {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read back %d of %d acknowledged records before the deadline (read up to %v, acknowledged up to %v); missing e.g. %v",
				found, len(acked), next, ends, firstKeys(byOffset))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			at := producedAt{r.Partition, r.Offset}
			want, ok := byOffset[at]
			if !ok {
				return
			}
			if string(r.Value) != want {
				t.Fatalf("%s-%d@%d is %q, %q was acknowledged there", topic, r.Partition, r.Offset, r.Value, want)
			}
			delete(byOffset, at)
			found++
		})
	}
	if len(byOffset) > 0 {
		t.Fatalf("acknowledged records not read back: %v", firstKeys(byOffset))
	}
}

// firstKeys names a few of the records still missing.
func firstKeys(m map[producedAt]string) []string {
	var out []string
	for at, v := range m {
		out = append(out, fmt.Sprintf("%s@%d-%d", v, at.partition, at.offset))
		if len(out) == 5 {
			break
		}
	}
	return out
}
