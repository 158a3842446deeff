package exactly_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// authzBroker is a broker with an authorizer: admin (SASL) and ANONYMOUS
// (the PLAINTEXT listener, used to observe state) are super users, bob
// (SCRAM-SHA-256 over SASL_PLAINTEXT) is whatever the ACLs say.
func authzBroker(t *testing.T) (b *exactly.Broker, admin *kadm.Client, bob *kgo.Client, logs *logBuffer) {
	t.Helper()
	b, logs = securedBroker(t, nil, "SASL_PLAINTEXT://127.0.0.1:0", map[string]string{
		"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":           "User:admin;User:ANONYMOUS",
	})
	acl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acl.Close)
	bob, err = kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("SASL_PLAINTEXT")),
		kgo.SASL(scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism()),
		kgo.DisableIdempotentWrite(), kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bob.Close)
	return b, kadm.NewClient(acl), bob, logs
}

// grant stores one ACL through the super user's client.
func grant(t *testing.T, adm *kadm.Client, b *kadm.ACLBuilder) {
	t.Helper()
	res, err := adm.CreateACLs(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("creating ACL: %v", r.Err)
		}
	}
}

func topicCode(resp kmsg.Response) error {
	switch r := resp.(type) {
	case *kmsg.CreateTopicsResponse:
		return kerr.ErrorForCode(r.Topics[0].ErrorCode)
	case *kmsg.DeleteTopicsResponse:
		return kerr.ErrorForCode(r.Topics[0].ErrorCode)
	case *kmsg.MetadataResponse:
		return kerr.ErrorForCode(r.Topics[0].ErrorCode)
	case *kmsg.ListOffsetsResponse:
		return kerr.ErrorForCode(r.Topics[0].Partitions[0].ErrorCode)
	case *kmsg.FetchResponse:
		return kerr.ErrorForCode(r.Topics[0].Partitions[0].ErrorCode)
	case *kmsg.JoinGroupResponse:
		return kerr.ErrorForCode(r.ErrorCode)
	case *kmsg.OffsetCommitResponse:
		return kerr.ErrorForCode(r.Topics[0].Partitions[0].ErrorCode)
	case *kmsg.InitProducerIDResponse:
		return kerr.ErrorForCode(r.ErrorCode)
	case *kmsg.CreateACLsResponse:
		return kerr.ErrorForCode(r.Results[0].ErrorCode)
	case *kmsg.DescribeUserSCRAMCredentialsResponse:
		return kerr.ErrorForCode(r.ErrorCode)
	case *kmsg.WriteTxnMarkersResponse:
		return kerr.ErrorForCode(r.Markers[0].Topics[0].Partitions[0].ErrorCode)
	case *kmsg.IncrementalAlterConfigsResponse:
		return kerr.ErrorForCode(r.Resources[0].ErrorCode)
	case *kmsg.DescribeConfigsResponse:
		return kerr.ErrorForCode(r.Resources[0].ErrorCode)
	case *kmsg.FindCoordinatorResponse:
		return kerr.ErrorForCode(r.Coordinators[0].ErrorCode)
	case *kmsg.EndTxnResponse:
		return kerr.ErrorForCode(r.ErrorCode)
	case *kmsg.DescribeGroupsResponse:
		return kerr.ErrorForCode(r.Groups[0].ErrorCode)
	}
	panic("no code for " + kmsg.NameForKey(resp.Key()))
}

// TestAuthorizationPerAPI: bob is refused each API with Kafka's code and
// nothing changes; once the ACL Kafka requires exists, the same request
// passes the check.
func TestAuthorizationPerAPI(t *testing.T) {
	b, adm, bob, logs := authzBroker(t)
	ctx := context.Background()
	for _, name := range []string{"orders", "doomed", "quiet"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce without WRITE: %v", err)
	}
	str := kmsg.StringPtr
	td, err := adm.ListTopics(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	ordersID := td["orders"].ID
	// Straight to the node, not routed: routing would ask Metadata first.
	node := bob.Broker(int(td["orders"].Partitions[0].Leader))
	for _, tc := range []struct {
		name  string
		req   func() kmsg.Request
		want  error
		acl   *kadm.ACLBuilder
		state func() string // observed state, must be the same after a denial
	}{
		{"CreateTopics", func() kmsg.Request {
			r := kmsg.NewPtrCreateTopicsRequest()
			ct := kmsg.NewCreateTopicsRequestTopic()
			ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "fresh", 1, 1
			r.Topics = append(r.Topics, ct)
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("fresh").Operations(kadm.OpCreate),
			func() string { return strings.Join(topics(t, b), ",") }},
		{"DeleteTopics", func() kmsg.Request {
			r := kmsg.NewPtrDeleteTopicsRequest()
			dt := kmsg.NewDeleteTopicsRequestTopic()
			dt.Topic = str("doomed")
			r.Topics, r.TopicNames = append(r.Topics, dt), []string{"doomed"}
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("doo").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpDelete),
			func() string { return strings.Join(topics(t, b), ",") }},
		{"Metadata named", func() kmsg.Request {
			r := kmsg.NewPtrMetadataRequest()
			mt := kmsg.NewMetadataRequestTopic()
			mt.Topic = str("orders")
			r.Topics = append(r.Topics, mt)
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("orders").Operations(kadm.OpWrite), nil},
		{"Metadata auto-create", func() kmsg.Request {
			r := kmsg.NewPtrMetadataRequest()
			mt := kmsg.NewMetadataRequestTopic()
			mt.Topic = str("auto")
			r.Topics, r.AllowAutoTopicCreation = append(r.Topics, mt), true
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("auto").Operations(kadm.OpCreate, kadm.OpDescribe),
			func() string { return strings.Join(topics(t, b), ",") }},
		{"ListOffsets", func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = "quiet"
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Timestamp = -1
			rt.Partitions = append(rt.Partitions, rp)
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("quiet").Operations(kadm.OpDescribe), nil},
		{"Fetch", func() kmsg.Request {
			r := kmsg.NewPtrFetchRequest()
			r.MaxBytes, r.MaxWaitMillis = 1<<20, 10
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = "orders", ordersID
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.PartitionMaxBytes = 1 << 20
			rt.Partitions = append(rt.Partitions, rp)
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("ord").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpRead), nil},
		{"JoinGroup", func() kmsg.Request {
			r := kmsg.NewPtrJoinGroupRequest()
			r.Group, r.ProtocolType, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis = "g", "consumer", 10000, 10000
			p := kmsg.NewJoinGroupRequestProtocol()
			p.Name = "range"
			r.Protocols = append(r.Protocols, p)
			return r
		}, kerr.GroupAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Groups("g").Operations(kadm.OpRead), nil},
		{"DescribeGroups", func() kmsg.Request {
			r := kmsg.NewPtrDescribeGroupsRequest()
			r.Groups = []string{"g2"}
			return r
		}, kerr.GroupAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Groups("g2").Operations(kadm.OpDescribe), nil},
		{"OffsetCommit", func() kmsg.Request {
			r := kmsg.NewPtrOffsetCommitRequest()
			r.Group, r.Generation = "g3", -1
			rt := kmsg.NewOffsetCommitRequestTopic()
			rt.Topic = "orders"
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Offset = 0
			rt.Partitions = append(rt.Partitions, rp)
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.GroupAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Groups("g3").Operations(kadm.OpRead),
			func() string {
				o, _ := adm.FetchOffsets(ctx, "g3")
				_, ok := o.Lookup("orders", 0)
				return map[bool]string{true: "committed", false: "none"}[ok]
			}},
		{"IncrementalAlterConfigs", func() kmsg.Request {
			r := kmsg.NewPtrIncrementalAlterConfigsRequest()
			rr := kmsg.NewIncrementalAlterConfigsRequestResource()
			rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, "quiet"
			c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			c.Name, c.Value = "retention.ms", str("1000")
			rr.Configs = append(rr.Configs, c)
			r.Resources = append(r.Resources, rr)
			return r
		}, kerr.TopicAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Topics("quiet").Operations(kadm.OpAlterConfigs),
			func() string {
				rc, _ := adm.DescribeTopicConfigs(ctx, "quiet")
				c, _ := rc.On("quiet", nil)
				for _, kv := range c.Configs {
					if kv.Key == "retention.ms" {
						return kv.MaybeValue()
					}
				}
				return ""
			}},
		{"DescribeConfigs broker", func() kmsg.Request {
			r := kmsg.NewPtrDescribeConfigsRequest()
			rr := kmsg.NewDescribeConfigsRequestResource()
			rr.ResourceType = kmsg.ConfigResourceTypeBroker
			r.Resources = append(r.Resources, rr)
			return r
		}, kerr.ClusterAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Clusters().Operations(kadm.OpDescribeConfigs), nil},
		{"FindCoordinator transaction", func() kmsg.Request {
			r := kmsg.NewPtrFindCoordinatorRequest()
			r.CoordinatorType, r.CoordinatorKeys = 1, []string{"tx2"}
			return r
		}, kerr.TransactionalIDAuthorizationFailed, kadm.NewACLs().Allow("User:bob").TransactionalIDs("tx2").Operations(kadm.OpDescribe), nil},
		{"EndTxn", func() kmsg.Request {
			r := kmsg.NewPtrEndTxnRequest()
			r.TransactionalID, r.ProducerID, r.ProducerEpoch = "tx3", 1, 0
			return r
		}, kerr.TransactionalIDAuthorizationFailed, kadm.NewACLs().Allow("User:bob").TransactionalIDs("tx3").Operations(kadm.OpWrite), nil},
		{"InitProducerId transactional", func() kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.TransactionalID, r.TransactionTimeoutMillis = str("tx"), 10000
			return r
		}, kerr.TransactionalIDAuthorizationFailed, kadm.NewACLs().Allow("User:bob").TransactionalIDs("tx").Operations(kadm.OpWrite), nil},
		{"DescribeUserScramCredentials", func() kmsg.Request { return kmsg.NewPtrDescribeUserSCRAMCredentialsRequest() },
			kerr.ClusterAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Clusters().Operations(kadm.OpDescribe), nil},
		// Before CreateAcls: ALTER on the cluster also allows markers, as in Kafka.
		{"WriteTxnMarkers", func() kmsg.Request {
			r := kmsg.NewPtrWriteTxnMarkersRequest()
			m := kmsg.NewWriteTxnMarkersRequestMarker()
			m.ProducerID, m.ProducerEpoch = 12345, 0
			mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
			mt.Topic, mt.Partitions = "orders", []int32{0}
			m.Topics = append(m.Topics, mt)
			r.Markers = append(r.Markers, m)
			return r
		}, kerr.ClusterAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Clusters().Operations(kadm.OpClusterAction), nil},
		{"CreateAcls", func() kmsg.Request {
			r := kmsg.NewPtrCreateACLsRequest()
			c := kmsg.NewCreateACLsRequestCreation()
			c.ResourceType, c.ResourceName, c.ResourcePatternType = kmsg.ACLResourceTypeTopic, "x", kmsg.ACLResourcePatternTypeLiteral
			c.Principal, c.Host, c.Operation, c.PermissionType = "User:bob", "*", kmsg.ACLOperationAll, kmsg.ACLPermissionTypeAllow
			r.Creations = append(r.Creations, c)
			return r
		}, kerr.ClusterAuthorizationFailed, kadm.NewACLs().Allow("User:bob").Clusters().Operations(kadm.OpAlter),
			func() string {
				res, _ := adm.DescribeACLs(ctx, kadm.NewACLs().AnyResource().Topics("x").Allow().Operations(kadm.OpAny))
				n := 0
				for _, r := range res {
					n += len(r.Described)
				}
				return strings.Repeat("acl", n)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before string
			if tc.state != nil {
				before = tc.state()
			}
			resp, err := node.Request(ctx, tc.req())
			if err != nil {
				t.Fatal(err)
			}
			if got := topicCode(resp); !errors.Is(got, tc.want) {
				t.Fatalf("without the ACL: %v, want %v", got, tc.want)
			}
			if tc.state != nil {
				if after := tc.state(); after != before {
					t.Fatalf("a denied request changed state: %q → %q", before, after)
				}
			}
			grant(t, adm, tc.acl)
			resp, err = node.Request(ctx, tc.req())
			if err != nil {
				t.Fatal(err)
			}
			if got := topicCode(resp); got != nil && errors.Is(got, tc.want) {
				t.Fatalf("with the ACL still %v", got)
			}
		})
	}
	if !strings.Contains(logs.String(), "authorization denied") || !strings.Contains(logs.String(), "principal=User:bob") {
		t.Fatalf("no audit line for the denials:\n%s", logs.String())
	}
	// WRITE on orders (granted above for Metadata) lets bob produce.
	if err := bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce with WRITE: %v", err)
	}
}

// TestAuthorizationDenyOverridesAllow: a DENY for bob beats an ALLOW for
// everyone on every topic; super users ignore both; an all-topics
// Metadata leaves out what bob may not describe.
func TestAuthorizationDenyOverridesAllow(t *testing.T) {
	_, adm, bob, _ := authzBroker(t)
	ctx := context.Background()
	for _, name := range []string{"open", "secret"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, name); err != nil {
			t.Fatal(err)
		}
	}
	grant(t, adm, kadm.NewACLs().Allow("User:*").Topics("*").Operations(kadm.OpAll))
	grant(t, adm, kadm.NewACLs().Deny("User:bob").Topics("sec").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpDescribe, kadm.OpWrite))
	md, err := kadm.NewClient(bob).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := md.Names(); len(names) != 1 || names[0] != "open" {
		t.Fatalf("bob lists %v", names)
	}
	if err := bob.ProduceSync(ctx, &kgo.Record{Topic: "secret", Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce to denied topic: %v", err)
	}
	if err := bob.ProduceSync(ctx, &kgo.Record{Topic: "open", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce to allowed topic: %v", err)
	}
	offs, err := adm.ListEndOffsets(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("secret", 0); o.Offset != 0 {
		t.Fatalf("denied produce wrote: end offset %d", o.Offset)
	}
}

// TestAuthorizationSurvivesRestart: ACLs and a SCRAM credential created
// over the wire (not by ScramUsers, which start would recreate) are read
// back when the broker restarts on the same data directory: carol still
// authenticates, is refused where she has no ACL and allowed where she
// has one.
func TestAuthorizationSurvivesRestart(t *testing.T) {
	opts, _ := securedOptions(nil, "SASL_PLAINTEXT://127.0.0.1:0", map[string]string{
		"authorizer.class.name": "exactly",
		"super.users":           "User:admin;User:ANONYMOUS",
	})
	opts.DataDir = t.TempDir()
	ctx := context.Background()
	admin := func(b *exactly.Broker) *kadm.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return kadm.NewClient(cl)
	}
	first := exactly.NewTestBroker(t, opts)
	adm := admin(first)
	for _, name := range []string{"orders", "secret"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, name); err != nil {
			t.Fatal(err)
		}
	}
	res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: "carol", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: "carol-secret"}})
	if err != nil || res.Error() != nil {
		t.Fatalf("creating carol: %v %v", err, res.Error())
	}
	grant(t, adm, kadm.NewACLs().Allow("User:carol").Topics("orders").Operations(kadm.OpWrite))

	check := func(b *exactly.Broker, when string) {
		t.Helper()
		carol, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("SASL_PLAINTEXT")),
			kgo.SASL(scram.Auth{User: "carol", Pass: "carol-secret"}.AsSha512Mechanism()),
			kgo.DisableIdempotentWrite(), kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer carol.Close()
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := carol.ProduceSync(pctx, &kgo.Record{Topic: "orders", Value: []byte(when)}).FirstErr(); err != nil {
			t.Fatalf("%s: produce with WRITE: %v", when, err)
		}
		if err := carol.ProduceSync(pctx, &kgo.Record{Topic: "secret", Value: []byte(when)}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("%s: produce without an ACL: %v", when, err)
		}
		ends, err := admin(b).ListEndOffsets(ctx, "orders", "secret")
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := ends.Lookup("secret", 0); o.Offset != 0 {
			t.Fatalf("%s: the refused produce wrote: end offset %d", when, o.Offset)
		}
	}
	check(first, "before the restart")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := exactly.NewTestBroker(t, opts)
	check(second, "after the restart")
	if ends, err := admin(second).ListEndOffsets(ctx, "orders"); err != nil {
		t.Fatal(err)
	} else if o, _ := ends.Lookup("orders", 0); o.Offset != 2 {
		t.Fatalf("orders holds %d records, want one per broker run", o.Offset)
	}
}
