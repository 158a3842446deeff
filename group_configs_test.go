package exactly_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/eos/share"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// onNode sends req to the node cl is seeded with, never routed to
// another, and returns the answer's code for its one resource, retrying
// while it is retriable (the coordinators still being placed) as a
// client would.
func onNode(ctx context.Context, t *testing.T, cl *kgo.Client, req kmsg.Request) (kmsg.Response, int16, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		resp, err := cl.SeedBrokers()[0].Request(ctx, req)
		if err != nil {
			t.Fatalf("%T: %v", req, err)
		}
		var code int16
		var msg *string
		switch r := resp.(type) {
		case *kmsg.IncrementalAlterConfigsResponse:
			code, msg = r.Resources[0].ErrorCode, r.Resources[0].ErrorMessage
		case *kmsg.AlterConfigsResponse:
			code, msg = r.Resources[0].ErrorCode, r.Resources[0].ErrorMessage
		case *kmsg.DescribeConfigsResponse:
			code, msg = r.Resources[0].ErrorCode, r.Resources[0].ErrorMessage
		}
		if e := kerr.ErrorForCode(code); !kerr.IsRetriable(e) || ctx.Err() != nil {
			return resp, code, derefOr(msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setGroupConfig is IncrementalAlterConfigs SET key=value on group g.
func setGroupConfig(g, key, value string, validateOnly bool) *kmsg.IncrementalAlterConfigsRequest {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.ValidateOnly = validateOnly
	rr := kmsg.NewIncrementalAlterConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeGroupConfig, g
	c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	c.Name, c.Op, c.Value = key, kmsg.IncrementalAlterConfigOpSet, kmsg.StringPtr(value)
	rr.Configs = append(rr.Configs, c)
	req.Resources = append(req.Resources, rr)
	return req
}

// describeGroupConfig is DescribeConfigs of one key of group g.
func describeGroupConfig(g, key string) *kmsg.DescribeConfigsRequest {
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType, rr.ResourceName, rr.ConfigNames = kmsg.ConfigResourceTypeGroupConfig, g, []string{key}
	req.Resources = append(req.Resources, rr)
	return req
}

// groupConfigValue is what node cl says key of group g is, and whether
// that is the default.
func groupConfigValue(ctx context.Context, t *testing.T, cl *kgo.Client, g, key string) (string, bool) {
	t.Helper()
	resp, code, msg := onNode(ctx, t, cl, describeGroupConfig(g, key))
	if code != 0 {
		t.Fatalf("describing %s of group %s: %v: %s", key, g, kerr.ErrorForCode(code), msg)
	}
	cfgs := resp.(*kmsg.DescribeConfigsResponse).Resources[0].Configs
	if len(cfgs) != 1 || cfgs[0].Name != key {
		t.Fatalf("describing %s of group %s: got %d configs %+v", key, g, len(cfgs), cfgs)
	}
	return derefOr(cfgs[0].Value), cfgs[0].Source == kmsg.ConfigSourceDefaultConfig
}

// TestGroupConfigsThroughEveryNode: group configs (the share.* keys) are
// kept by the node running the coordinators, but admin tools send config
// requests to any node; every node takes them (forwarding them there),
// and every node describes them alike: set, replaced, validated,
// validate-only.
func TestGroupConfigsThroughEveryNode(t *testing.T) {
	c := startInProcessCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cls := []*kgo.Client{c.client(0), c.client(1), c.client(2)}
	// Straight after the start, before the coordinators are placed: the
	// toolkit waits them out.
	if err := share.StartAtEarliest(ctx, cls[1], "early"); err != nil {
		t.Fatal(err)
	}
	home := c.replicatedLayout(ctx, "__share_group_state", 1, 2, 0, 1, 2)[0]
	t.Logf("share coordinator on node %d", home)
	for i, cl := range cls {
		if got, _ := groupConfigValue(ctx, t, cl, "early", "share.auto.offset.reset"); got != "earliest" {
			t.Errorf("node %d describes share.auto.offset.reset=%q for the group set at the start", i+1, got)
		}
	}
	const key = "share.session.timeout.ms"
	for i, cl := range cls {
		want := fmt.Sprint(45001 + i)
		if _, code, msg := onNode(ctx, t, cl, setGroupConfig("g", key, want, false)); code != 0 {
			t.Fatalf("setting %s through node %d: %v: %s", key, i+1, kerr.ErrorForCode(code), msg)
		}
		for j, other := range cls {
			if got, def := groupConfigValue(ctx, t, other, "g", key); got != want || def {
				t.Errorf("set through node %d, node %d describes %s=%q (default %v), want %q", i+1, j+1, key, got, def, want)
			}
		}
	}
	last := fmt.Sprint(45001 + len(cls) - 1)
	for i, cl := range cls {
		// Validation answers come back from the coordinators' node.
		_, code, msg := onNode(ctx, t, cl, setGroupConfig("g", key, "0", false))
		if code != kerr.InvalidConfig.Code || !strings.Contains(msg, key) {
			t.Errorf("%s=0 through node %d: %v %q, want INVALID_CONFIG naming the key", key, i+1, kerr.ErrorForCode(code), msg)
		}
		if _, code, msg := onNode(ctx, t, cl, setGroupConfig("g", key, "50000", true)); code != 0 {
			t.Errorf("validate-only through node %d: %v: %s", i+1, kerr.ErrorForCode(code), msg)
		}
		if got, _ := groupConfigValue(ctx, t, cl, "g", key); got != last {
			t.Errorf("after a refused and a validate-only change through node %d: %s=%q, want %q", i+1, key, got, last)
		}
	}
	// Several GROUP resources among others in one request: each answered
	// in its place.
	adm := kadm.NewClient(cls[0])
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "mixed"); err != nil {
		t.Fatal(err)
	}
	for i := range cls { // every node knows it
		for {
			m, err := c.metadataOf(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(m.Topics, func(mt kmsg.MetadataResponseTopic) bool {
				return mt.Topic != nil && *mt.Topic == "mixed" && mt.ErrorCode == 0
			}) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, cl := range cls {
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		for _, r := range []struct {
			typ       kmsg.ConfigResourceType
			name, key string
			value     string
		}{
			{kmsg.ConfigResourceTypeGroupConfig, "g1", key, fmt.Sprint(48001 + i)},
			{kmsg.ConfigResourceTypeTopic, "mixed", "retention.ms", fmt.Sprint(3600001 + i)},
			{kmsg.ConfigResourceTypeGroupConfig, "g2", key, "0"},
			{kmsg.ConfigResourceTypeGroupConfig, "g3", key, fmt.Sprint(49001 + i)},
		} {
			rr := kmsg.NewIncrementalAlterConfigsRequestResource()
			rr.ResourceType, rr.ResourceName = r.typ, r.name
			c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			c.Name, c.Op, c.Value = r.key, kmsg.IncrementalAlterConfigOpSet, kmsg.StringPtr(r.value)
			rr.Configs = append(rr.Configs, c)
			req.Resources = append(req.Resources, rr)
		}
		resp, err := cl.SeedBrokers()[0].Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, rs := range resp.(*kmsg.IncrementalAlterConfigsResponse).Resources {
			got = append(got, fmt.Sprintf("%s:%v", rs.ResourceName, kerr.ErrorForCode(rs.ErrorCode)))
		}
		if want := []string{"g1:<nil>", "mixed:<nil>", "g2:" + kerr.InvalidConfig.Error(), "g3:<nil>"}; !slices.Equal(got, want) {
			t.Errorf("mixed request through node %d: %q, want %q", i+1, got, want)
		}
		dreq := kmsg.NewPtrDescribeConfigsRequest()
		for _, r := range []struct {
			typ       kmsg.ConfigResourceType
			name, key string
		}{{kmsg.ConfigResourceTypeGroupConfig, "g1", key}, {kmsg.ConfigResourceTypeTopic, "mixed", "retention.ms"}, {kmsg.ConfigResourceTypeGroupConfig, "g3", key}} {
			rr := kmsg.NewDescribeConfigsRequestResource()
			rr.ResourceType, rr.ResourceName, rr.ConfigNames = r.typ, r.name, []string{r.key}
			dreq.Resources = append(dreq.Resources, rr)
		}
		dresp, err := cl.SeedBrokers()[0].Request(ctx, dreq) // the node that applied the topic change
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, rs := range dresp.(*kmsg.DescribeConfigsResponse).Resources {
			for _, c := range rs.Configs {
				got = append(got, fmt.Sprintf("%s:%s=%s", rs.ResourceName, c.Name, derefOr(c.Value)))
			}
		}
		if want := []string{"g1:" + key + "=" + fmt.Sprint(48001+i), "mixed:retention.ms=" + fmt.Sprint(3600001+i),
			"g3:" + key + "=" + fmt.Sprint(49001+i)}; !slices.Equal(got, want) {
			t.Errorf("after the mixed request through node %d, it describes %q, want %q", i+1, got, want)
		}
	}
	// AlterConfigs replaces the whole set: the session timeout goes back
	// to its default.
	for i, cl := range cls {
		req := kmsg.NewPtrAlterConfigsRequest()
		rr := kmsg.NewAlterConfigsRequestResource()
		rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeGroupConfig, "g"
		rc := kmsg.NewAlterConfigsRequestResourceConfig()
		rc.Name, rc.Value = "share.heartbeat.interval.ms", kmsg.StringPtr(fmt.Sprint(4001+i))
		rr.Configs = append(rr.Configs, rc)
		req.Resources = append(req.Resources, rr)
		if _, code, msg := onNode(ctx, t, cl, req); code != 0 {
			t.Fatalf("AlterConfigs through node %d: %v: %s", i+1, kerr.ErrorForCode(code), msg)
		}
		for j, other := range cls {
			if _, def := groupConfigValue(ctx, t, other, "g", key); !def {
				t.Errorf("after AlterConfigs through node %d, node %d still has %s set", i+1, j+1, key)
			}
			if got, _ := groupConfigValue(ctx, t, other, "g", "share.heartbeat.interval.ms"); got != fmt.Sprint(4001+i) {
				t.Errorf("after AlterConfigs through node %d, node %d describes share.heartbeat.interval.ms=%q", i+1, j+1, got)
			}
		}
	}
}

// TestForwardedGroupConfigsNeedClusterAction: with ACLs, the node that
// receives a GROUP config request authorizes its user and forwards it as
// itself; the coordinators' node takes it from a node's principal that
// holds CLUSTER_ACTION only, and from nothing else that merely says it is
// a node.
func TestForwardedGroupConfigsNeedClusterAction(t *testing.T) {
	c := newInProcessCluster(t)
	sasl := []string{testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)}
	c.conf = map[string]string{
		"authorizer.class.name":   "exactly",
		"super.users":             "User:admin",
		"sasl.enabled.mechanisms": "SCRAM-SHA-512",
	}
	opts := make([]exactly.Options, 3)
	for i := range opts {
		// The nodes reach each other on PLAINTEXT, their first listener,
		// as User:ANONYMOUS.
		opts[i].Config = map[string]string{
			"listeners": "PLAINTEXT://" + c.clients[i] + ",SASL_PLAINTEXT://" + sasl[i] + ",CONTROLLER://" + c.ctrls[i],
		}
	}
	opts[0].ScramUsers = []exactly.ScramUser{
		{Mechanism: "SCRAM-SHA-512", Name: "admin", Password: "admin-secret"},
		{Mechanism: "SCRAM-SHA-512", Name: "bob", Password: "bob-secret"},
	}
	c.startAll(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	as := func(i int, user string, extra ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(sasl[i]),
			kgo.SASL(scram.Auth{User: user, Pass: user + "-secret"}.AsSha512Mechanism())}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	adm := kadm.NewClient(as(0, "admin"))
	grant(t, adm, kadm.NewACLs().Allow("User:ANONYMOUS").Clusters().Operations(kadm.OpClusterAction))
	// Only so that the test can see where the coordinators run.
	grant(t, adm, kadm.NewACLs().Allow("User:ANONYMOUS").Topics("__share_group_state").Operations(kadm.OpDescribe))
	grant(t, adm, kadm.NewACLs().Allow("User:bob").Groups("bobs").Operations(kadm.OpAlterConfigs, kadm.OpDescribeConfigs))
	home := c.replicatedLayout(ctx, "__share_group_state", 1, 2, 0, 1, 2)[0]
	t.Logf("share coordinator on node %d", home)
	const key = "share.session.timeout.ms"
	for i := range 3 {
		bob := as(i, "bob")
		want := fmt.Sprint(46001 + i)
		if _, code, msg := onNode(ctx, t, bob, setGroupConfig("bobs", key, want, false)); code != 0 {
			t.Fatalf("bob setting %s through node %d: %v: %s", key, i+1, kerr.ErrorForCode(code), msg)
		}
		if got, _ := groupConfigValue(ctx, t, bob, "bobs", key); got != want {
			t.Errorf("bob through node %d: %s=%q, want %q", i+1, key, got, want)
		}
		if _, code, _ := onNode(ctx, t, bob, setGroupConfig("others", key, want, false)); code != kerr.GroupAuthorizationFailed.Code {
			t.Errorf("bob on a group he has no ACL for, through node %d: %v, want GROUP_AUTHORIZATION_FAILED", i+1, kerr.ErrorForCode(code))
		}
		// bob calling himself a node gains nothing: he has no
		// CLUSTER_ACTION, and a node's request is not forwarded again.
		fake := as(i, "bob", kgo.ClientID("exactly-node-9"))
		if _, code, _ := onNode(ctx, t, fake, setGroupConfig("others", key, want, false)); code != kerr.GroupAuthorizationFailed.Code {
			t.Errorf("bob as a node, on a group he has no ACL for, through node %d: %v, want GROUP_AUTHORIZATION_FAILED", i+1, kerr.ErrorForCode(code))
		}
	}
	// Without CLUSTER_ACTION for the nodes, a forwarded request is
	// refused, and the answer says whose permission is missing.
	res, err := adm.DeleteACLs(ctx, kadm.NewACLs().Allow("User:ANONYMOUS").AllowHosts().Clusters().Operations(kadm.OpClusterAction).
		ResourcePatternType(kadm.ACLPatternLiteral))
	if err != nil || len(res) != 1 || res[0].Err != nil || len(res[0].Deleted) != 1 {
		t.Fatalf("revoking the nodes' CLUSTER_ACTION: %v %+v", err, res)
	}
	other := as(int(home)%3, "bob") // a node other than the coordinators'
	_, code, msg := onNode(ctx, t, other, setGroupConfig("bobs", key, "47000", false))
	if code != kerr.GroupAuthorizationFailed.Code || !strings.Contains(msg, "CLUSTER_ACTION") {
		t.Errorf("forwarded without the nodes' CLUSTER_ACTION: %v %q, want GROUP_AUTHORIZATION_FAILED naming CLUSTER_ACTION", kerr.ErrorForCode(code), msg)
	}
}
