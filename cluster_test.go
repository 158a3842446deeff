package exactly_test

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// inProcessCluster is three nodes of one cluster in this process, each
// with its own data directory and ports.
type inProcessCluster struct {
	t       testing.TB
	dirs    []string
	clients []string // each node's PLAINTEXT address
	ctrls   []string // each node's CONTROLLER address
	nodes   []*exactly.Broker
	// conf adds to (or overrides) every node's configuration.
	conf map[string]string
}

func startInProcessCluster(t *testing.T) *inProcessCluster {
	c := newInProcessCluster(t)
	c.startAll(nil)
	return c
}

// newInProcessCluster chooses the nodes' directories and ports.
func newInProcessCluster(t testing.TB) *inProcessCluster {
	c := &inProcessCluster{t: t}
	for i := range 3 {
		c.dirs = append(c.dirs, filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i+1)))
		c.clients = append(c.clients, testenv.FreeAddr(t))
		c.ctrls = append(c.ctrls, testenv.FreeAddr(t))
	}
	return c
}

// startAll starts the three nodes together (each waits for a quorum in
// Start), with opts[i] for node i if given.
func (c *inProcessCluster) startAll(opts []exactly.Options) {
	t := c.t
	c.nodes = make([]*exactly.Broker, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o exactly.Options
			if i < len(opts) {
				o = opts[i]
			}
			c.nodes[i] = c.startWith(i, c.voters(), o)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n != nil {
				n.Close()
			}
		}
	})
}

func (c *inProcessCluster) start(i int, voters string) *exactly.Broker {
	return c.startWith(i, voters, exactly.Options{})
}

func (c *inProcessCluster) startWith(i int, voters string, opts exactly.Options) *exactly.Broker {
	opts.DataDir = c.dirs[i]
	conf := map[string]string{
		"node.id":                      fmt.Sprint(i + 1),
		"listeners":                    "PLAINTEXT://" + c.clients[i] + ",CONTROLLER://" + c.ctrls[i],
		"controller.listener.names":    "CONTROLLER",
		"controller.quorum.voters":     voters,
		"broker.heartbeat.interval.ms": "200",
		"broker.session.timeout.ms":    "2000",
	}
	maps.Copy(conf, c.conf)
	maps.Copy(conf, opts.Config) // this node's own, over the cluster's
	b, err := exactly.Start(exactly.Options{DataDir: opts.DataDir, AdoptSingleNode: opts.AdoptSingleNode, Config: conf, ScramUsers: opts.ScramUsers})
	if err != nil {
		c.t.Errorf("starting node %d: %v", i+1, err)
		return nil
	}
	return b
}

func (c *inProcessCluster) voters() string {
	var vs []string
	for i, a := range c.ctrls {
		vs = append(vs, fmt.Sprintf("%d@%s", i+1, a))
	}
	return strings.Join(vs, ",")
}

// client is a client that knows node i only (it learns the others from
// Metadata).
func (c *inProcessCluster) client(i int, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.clients[i])}, opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

// metadataOf is node i's own answer to Metadata (all topics).
func (c *inProcessCluster) metadataOf(ctx context.Context, i int) (*kmsg.MetadataResponse, error) {
	cl := c.client(i)
	req := kmsg.NewPtrMetadataRequest()
	seeds := cl.SeedBrokers()
	return req.RequestWith(ctx, seeds[0])
}

// layout summarizes an answer: brokers, controller, each topic's
// partition leaders.
func layout(m *kmsg.MetadataResponse) string {
	var ids []int32
	for _, b := range m.Brokers {
		ids = append(ids, b.NodeID)
	}
	slices.Sort(ids)
	s := fmt.Sprintf("brokers=%v", ids)
	var topics []string
	for _, t := range m.Topics {
		var leaders []string
		for _, p := range t.Partitions {
			if len(p.Replicas) > 1 {
				// Leadership of a replicated partition moves; its
				// replicas are the layout (once it has a leader).
				leaders = append(leaders, fmt.Sprintf("replicas%v", slices.Sorted(slices.Values(p.Replicas))))
				if p.Leader < 0 {
					leaders = append(leaders, "-1")
				}
				continue
			}
			leaders = append(leaders, fmt.Sprint(p.Leader))
		}
		topics = append(topics, fmt.Sprintf("%s:%v", *t.Topic, leaders))
	}
	slices.Sort(topics)
	return s + " " + strings.Join(topics, " ")
}

// converged waits until every running node answers Metadata alike and
// returns that answer's layout.
func (c *inProcessCluster) converged(ctx context.Context, running ...int) string {
	c.t.Helper()
	var last []string
	for ctx.Err() == nil {
		last = last[:0]
		for _, i := range running {
			m, err := c.metadataOf(ctx, i)
			if err != nil {
				last = append(last, err.Error())
				continue
			}
			last = append(last, layout(m))
		}
		if len(last) > 0 && !strings.Contains(last[0], "-1") && slices.Equal(slices.Compact(slices.Clone(last)), last[:1]) {
			return last[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("the nodes' metadata did not converge: %q", last)
	return ""
}

// TestClusterInProcess: three nodes in one process form a cluster; a
// topic created through one node is listed alike by all, its partitions
// spread over them; records produced through one node are consumed
// through another; a node closed and started again from its directory
// rejoins, and the controller moves when its node stops.
func TestClusterInProcess(t *testing.T) {
	c := startInProcessCluster(t)
	if t.Failed() {
		t.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := kadm.NewClient(c.client(1)).CreateTopic(ctx, 6, 1, nil, "spread"); err != nil {
		t.Fatal(err)
	}
	got := c.converged(ctx, 0, 1, 2)
	// The coordinators' topics appear once all three nodes registered.
	for ctx.Err() == nil && !strings.Contains(got, "__share_group_state") {
		time.Sleep(50 * time.Millisecond)
		got = c.converged(ctx, 0, 1, 2)
	}
	if !strings.HasPrefix(got, "brokers=[1 2 3] ") {
		t.Fatalf("metadata %q does not list the three brokers", got)
	}
	m, err := c.metadataOf(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaders := map[int32]bool{}
	for _, tp := range m.Topics {
		if *tp.Topic != "spread" {
			continue
		}
		for _, p := range tp.Partitions {
			leaders[p.Leader] = true
			if !slices.Equal(p.Replicas, []int32{p.Leader}) || !slices.Equal(p.ISR, []int32{p.Leader}) {
				t.Errorf("partition %d: leader %d, replicas %v, ISR %v", p.Partition, p.Leader, p.Replicas, p.ISR)
			}
		}
	}
	if len(leaders) != 3 {
		t.Errorf("six partitions led by %v: want every node to lead some", leaders)
	}
	if cid := c.nodes[0].ClusterID(); cid == "" || cid != c.nodes[1].ClusterID() || cid != c.nodes[2].ClusterID() {
		t.Errorf("cluster ids differ: %q %q %q", c.nodes[0].ClusterID(), c.nodes[1].ClusterID(), c.nodes[2].ClusterID())
	}

	// Produce through node 1, consume through node 3.
	prod := c.client(0, kgo.DefaultProduceTopic("spread"))
	const n = 600
	for i := range n {
		prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Error(err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons := c.client(2, kgo.ConsumeTopics("spread"), kgo.ConsumerGroup("g"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]bool{}
	for len(seen) < n && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
	}
	if len(seen) != n {
		t.Fatalf("consumed %d distinct records through node 3, want %d", len(seen), n)
	}

	// A partition sent to a node that does not hold it: NOT_LEADER_OR_
	// FOLLOWER naming the leader and its address (KIP-951).
	checkLeaderHints(ctx, t, c, m)

	// Stop the controller's node: another takes over; start it again
	// from its directory: it rejoins and every node agrees.
	ctrl := m.ControllerID
	if ctrl < 1 || ctrl > 3 {
		t.Fatalf("controller %d", ctrl)
	}
	i := int(ctrl - 1)
	if err := c.nodes[i].Close(); err != nil {
		t.Fatal(err)
	}
	c.nodes[i] = nil
	other := (i + 1) % 3
	for ctx.Err() == nil {
		m, err := c.metadataOf(ctx, other)
		if err == nil && m.ControllerID > 0 && m.ControllerID != ctrl {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatal("the controller did not move off the stopped node")
	}
	c.nodes[i] = c.start(i, c.voters())
	if c.nodes[i] == nil {
		t.FailNow()
	}
	if after := c.converged(ctx, 0, 1, 2); after != got {
		t.Errorf("after the restart the nodes agree on %q, before on %q", after, got)
	}

	// The quorum as DescribeQuorum tells it: three voters, a leader.
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rt.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, c.client(0).SeedBrokers()[0])
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || p.LeaderID < 1 || len(p.CurrentVoters) != 3 || p.HighWatermark <= 0 {
		t.Errorf("DescribeQuorum: %+v", p)
	}
}

// TestDescribeQuorumOnASingleNode: a single node has no quorum to describe.
func TestDescribeQuorumOnASingleNode(t *testing.T) {
	b := exactly.NewTestBroker(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rt.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("error %d, want UNKNOWN_TOPIC_OR_PARTITION", code)
	}
}

// TestClusterConfigRefusals: the cluster keys are checked at start.
func TestClusterConfigRefusals(t *testing.T) {
	ctrl, client := testenv.FreeAddr(t), testenv.FreeAddr(t)
	for name, cfg := range map[string]map[string]string{
		"no node.id": {"controller.quorum.voters": "1@" + ctrl, "listeners": "PLAINTEXT://" + client + ",CONTROLLER://" + ctrl},
		"not a voter": {"node.id": "2", "controller.quorum.voters": "1@" + ctrl,
			"listeners": "PLAINTEXT://" + client + ",CONTROLLER://" + ctrl},
		"no controller listener": {"node.id": "1", "controller.quorum.voters": "1@" + ctrl, "listeners": "PLAINTEXT://" + client},
		"broker role of a voter": {"node.id": "1", "process.roles": "broker", "controller.quorum.voters": "1@" + ctrl,
			"listeners": "PLAINTEXT://" + client + ",CONTROLLER://" + ctrl},
		"controller role only": {"node.id": "1", "process.roles": "controller", "controller.quorum.voters": "1@" + ctrl,
			"listeners": "PLAINTEXT://" + client + ",CONTROLLER://" + ctrl},
		"broker-only without a controller listener": {"node.id": "2", "process.roles": "broker", "controller.quorum.voters": "1@" + ctrl,
			"listeners": "PLAINTEXT://" + client},
		"bad voters": {"node.id": "1", "controller.quorum.voters": "1@nowhere", "listeners": "PLAINTEXT://" + client + ",CONTROLLER://" + ctrl},
	} {
		b, err := exactly.Start(exactly.Options{DataDir: t.TempDir(), Config: cfg})
		if err == nil {
			b.Close()
			t.Errorf("%s: started", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestClusterAdoptsSingleNode: a single node's directory becomes node 1
// of a new cluster (serve --adopt; the other nodes formatted with its
// cluster id): its topics and records are the cluster's, and every node
// lists them.
func TestClusterAdoptsSingleNode(t *testing.T) {
	c := newInProcessCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	single, err := exactly.Start(exactly.Options{DataDir: c.dirs[0], Listen: c.clients[0]})
	if err != nil {
		t.Fatal(err)
	}
	cl := c.client(0, kgo.DefaultProduceTopic("kept"), kgo.AllowAutoTopicCreation())
	for i := range 50 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	clusterID := single.ClusterID()
	if err := single.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		if err := cluster.Format(vfs.OS(), c.dirs[i], clusterID, int32(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	c.startAll([]exactly.Options{{AdoptSingleNode: true}})
	if t.Failed() {
		t.FailNow()
	}
	for i, n := range c.nodes {
		if n.ClusterID() != clusterID {
			t.Errorf("node %d is in cluster %q, want the single node's %q", i+1, n.ClusterID(), clusterID)
		}
	}
	if got := c.converged(ctx, 0, 1, 2); !strings.Contains(got, "kept:[1]") {
		t.Errorf("the nodes agree on %q: want the single node's topic on node 1", got)
	}
	recs := testenv.ReadToEnd(t, c.clients[2], "kept", true)
	if n := len(testenv.Flatten(recs)); n != 50 {
		t.Errorf("read %d records of the adopted topic through node 3, want 50", n)
	}
}

// checkLeaderHints sends Produce v11 and Fetch v16 for a partition of
// "spread" to a node that does not lead it.
func checkLeaderHints(ctx context.Context, t *testing.T, c *inProcessCluster, m *kmsg.MetadataResponse) {
	t.Helper()
	var part, leader int32 = -1, -1
	var topicID [16]byte
	for _, tp := range m.Topics {
		if *tp.Topic == "spread" {
			part, leader, topicID = tp.Partitions[0].Partition, tp.Partitions[0].Leader, tp.TopicID
		}
	}
	wrong := int(leader) % 3 // node index of another node: leader ids are 1..3
	to := c.client(wrong).SeedBrokers()[0]
	wantAddr := c.clients[leader-1]

	prod := kmsg.NewPtrProduceRequest()
	prod.Version, prod.Acks, prod.TimeoutMillis = 11, -1, 5000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "spread"
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Partition = part
	pp.Records = testenv.RecordsBatch(0, kmsg.Record{Value: []byte("x")})
	pt.Partitions = append(pt.Partitions, pp)
	prod.Topics = append(prod.Topics, pt)
	presp, err := prod.RequestWith(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	sp := presp.Topics[0].Partitions[0]
	if sp.ErrorCode != kerr.NotLeaderForPartition.Code || sp.CurrentLeader.LeaderID != leader {
		t.Errorf("produce to node %d: error %d, current leader %d; want NOT_LEADER_OR_FOLLOWER naming %d", wrong+1, sp.ErrorCode, sp.CurrentLeader.LeaderID, leader)
	}
	if len(presp.Brokers) != 1 || fmt.Sprintf("%s:%d", presp.Brokers[0].Host, presp.Brokers[0].Port) != wantAddr {
		t.Errorf("produce: node endpoints %+v, want %d at %s", presp.Brokers, leader, wantAddr)
	}

	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version, fetch.MaxBytes = 16, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.TopicID = topicID
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.Partition, fp.PartitionMaxBytes, fp.CurrentLeaderEpoch = part, 1<<20, -1
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	fresp, err := fetch.RequestWith(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	fpr := fresp.Topics[0].Partitions[0]
	if fpr.ErrorCode != kerr.NotLeaderForPartition.Code || fpr.CurrentLeader.LeaderID != leader {
		t.Errorf("fetch from node %d: error %d, current leader %d; want NOT_LEADER_OR_FOLLOWER naming %d", wrong+1, fpr.ErrorCode, fpr.CurrentLeader.LeaderID, leader)
	}
	if len(fresp.Brokers) != 1 || fresp.Brokers[0].NodeID != leader {
		t.Errorf("fetch: node endpoints %+v, want %d", fresp.Brokers, leader)
	}
}

// TestClusterBrokerOnlyNode: a fourth node with process.roles=broker
// follows the metadata log without voting (admitted on its own as a
// raft learner): it is listed as a broker, leads partitions of a topic
// created after it joined, serves them, and DescribeQuorum shows it as an
// observer, not a voter.
func TestClusterBrokerOnlyNode(t *testing.T) {
	c := startInProcessCluster(t)
	if t.Failed() {
		t.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "node4")
	addr, ctrl := testenv.FreeAddr(t), testenv.FreeAddr(t)
	b4, err := exactly.Start(exactly.Options{DataDir: dir, Config: map[string]string{
		"node.id":                      "4",
		"process.roles":                "broker",
		"listeners":                    "PLAINTEXT://" + addr + ",CONTROLLER://" + ctrl,
		"controller.listener.names":    "CONTROLLER",
		"controller.quorum.voters":     c.voters(),
		"broker.heartbeat.interval.ms": "200",
		"broker.session.timeout.ms":    "2000",
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b4.Close()
	c.clients = append(c.clients, addr)
	c.nodes = append(c.nodes, b4)
	if b4.ClusterID() != c.nodes[0].ClusterID() {
		t.Errorf("node 4 is in cluster %q, the voters in %q", b4.ClusterID(), c.nodes[0].ClusterID())
	}
	if _, err := kadm.NewClient(c.client(3)).CreateTopic(ctx, 8, 1, nil, "four"); err != nil {
		t.Fatal(err)
	}
	got := c.converged(ctx, 0, 1, 2, 3)
	if !strings.HasPrefix(got, "brokers=[1 2 3 4] ") {
		t.Fatalf("metadata %q does not list the four brokers", got)
	}
	m, err := c.metadataOf(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	led := 0
	for _, tp := range m.Topics {
		if *tp.Topic == "four" {
			for _, p := range tp.Partitions {
				if p.Leader == 4 {
					led++
				}
			}
		}
	}
	if led == 0 {
		t.Errorf("node 4 leads none of the 8 partitions of a topic created after it joined: %s", got)
	}
	prod := c.client(3, kgo.DefaultProduceTopic("four"))
	for i := range 200 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(testenv.Flatten(testenv.ReadToEnd(t, c.clients[0], "four", true))); n != 200 {
		t.Errorf("read %d records through node 1, want 200", n)
	}
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rt.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
	req.Topics = append(req.Topics, rt)
	controller := c.client(3)
	resp, err := req.RequestWith(ctx, controller.Broker(int(m.ControllerID)))
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	var voters, observers []int32
	for _, v := range p.CurrentVoters {
		voters = append(voters, v.ReplicaID)
	}
	for _, o := range p.Observers {
		observers = append(observers, o.ReplicaID)
	}
	slices.Sort(voters)
	if !slices.Equal(voters, []int32{1, 2, 3}) || !slices.Equal(observers, []int32{4}) {
		t.Errorf("DescribeQuorum from the controller: voters %v, observers %v; want [1 2 3] and [4]", voters, observers)
	}
}

// TestClusterRestartedBrokerStaysUnfenced: a node that restarts registers
// again, and the controller counts the registration as a heartbeat. It
// used to judge the new registration by the old one's last heartbeat and
// fence it at once, so a replication factor 3 topic could not be placed
// for a heartbeat interval or two after any restart.
func TestClusterRestartedBrokerStaysUnfenced(t *testing.T) {
	c := startInProcessCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.converged(ctx, 0, 1, 2)
	time.Sleep(3 * time.Second) // the controller has led longer than a session (2 s)
	if err := c.nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	c.nodes[2] = c.start(2, c.voters())
	cl := c.client(0)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		m, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl.SeedBrokers()[0])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(m.Brokers, func(b kmsg.MetadataResponseBroker) bool { return b.NodeID == 3 }) {
			t.Fatalf("node 3 is fenced %v after its restart registered it", time.Until(deadline)-3*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
