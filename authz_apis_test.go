package exactly_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// authzFailures are the codes a refusal by the authorizer answers.
var authzFailures = []int16{kerr.TopicAuthorizationFailed.Code, kerr.GroupAuthorizationFailed.Code,
	kerr.ClusterAuthorizationFailed.Code, kerr.TransactionalIDAuthorizationFailed.Code}

// errorCodes collects every ErrorCode field of a response, however deep.
func errorCodes(resp kmsg.Response) []int16 {
	var out []int16
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				if f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16 {
					out = append(out, int16(v.Field(i).Int()))
					continue
				}
				walk(v.Field(i))
			}
		}
	}
	walk(reflect.ValueOf(resp))
	return out
}

// clusterState is everything a request could change, read through the
// super user: topics (ids, partitions, start and end offsets), dynamic
// topic and broker configs, groups and their committed offsets, ACLs,
// SCRAM users, producer state, transactions and client quotas. Two
// snapshots around a denied request must be equal.
func clusterState(t *testing.T, su *kgo.Client) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	must := func(resp kmsg.Response, err error) kmsg.Response {
		t.Helper()
		if err != nil {
			t.Fatalf("reading state: %v", err)
		}
		return resp
	}
	md := must(kmsg.NewPtrMetadataRequest().RequestWith(ctx, su)).(*kmsg.MetadataResponse)
	var topicNames []string
	lo, hi := kmsg.NewPtrListOffsetsRequest(), kmsg.NewPtrListOffsetsRequest()
	producers := kmsg.NewPtrDescribeProducersRequest()
	for _, mt := range md.Topics {
		if mt.IsInternal {
			continue
		}
		name := *mt.Topic
		topicNames = append(topicNames, name)
		add("topic %s id=%x partitions=%d", name, mt.TopicID, len(mt.Partitions))
		for _, ts := range []struct {
			req *kmsg.ListOffsetsRequest
			at  int64
		}{{lo, -2}, {hi, -1}} {
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = name
			for _, p := range mt.Partitions {
				rp := kmsg.NewListOffsetsRequestTopicPartition()
				rp.Partition, rp.Timestamp = p.Partition, ts.at
				rt.Partitions = append(rt.Partitions, rp)
			}
			ts.req.Topics = append(ts.req.Topics, rt)
		}
		pt := kmsg.NewDescribeProducersRequestTopic()
		pt.Topic = name
		for _, p := range mt.Partitions {
			pt.Partitions = append(pt.Partitions, p.Partition)
		}
		producers.Topics = append(producers.Topics, pt)
	}
	for i, req := range []*kmsg.ListOffsetsRequest{lo, hi} {
		for _, rt := range must(req.RequestWith(ctx, su)).(*kmsg.ListOffsetsResponse).Topics {
			for _, rp := range rt.Partitions {
				add("offset %s/%d %s=%d err=%d", rt.Topic, rp.Partition, []string{"start", "end"}[i], rp.Offset, rp.ErrorCode)
			}
		}
	}
	for _, rt := range must(producers.RequestWith(ctx, su)).(*kmsg.DescribeProducersResponse).Topics {
		for _, rp := range rt.Partitions {
			for _, ap := range rp.ActiveProducers {
				add("producer %s/%d id=%d epoch=%d seq=%d txnstart=%d", rt.Topic, rp.Partition, ap.ProducerID, ap.ProducerEpoch, ap.LastSequence, ap.CurrentTxnStartOffset)
			}
		}
	}
	dc := kmsg.NewPtrDescribeConfigsRequest()
	for _, name := range topicNames {
		rr := kmsg.NewDescribeConfigsRequestResource()
		rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, name
		dc.Resources = append(dc.Resources, rr)
	}
	broker := kmsg.NewDescribeConfigsRequestResource()
	broker.ResourceType, broker.ResourceName = kmsg.ConfigResourceTypeBroker, fmt.Sprint(md.Brokers[0].NodeID)
	dc.Resources = append(dc.Resources, broker)
	for _, rr := range must(dc.RequestWith(ctx, su)).(*kmsg.DescribeConfigsResponse).Resources {
		for _, c := range rr.Configs {
			dynamic := c.Source == kmsg.ConfigSourceDynamicTopicConfig || c.Source == kmsg.ConfigSourceDynamicBrokerConfig || c.Source == kmsg.ConfigSourceDynamicDefaultBrokerConfig
			if dynamic {
				add("config %s/%s %s=%v", rr.ResourceType, rr.ResourceName, c.Name, derefOr(c.Value))
			}
		}
	}
	for _, g := range must(kmsg.NewPtrListGroupsRequest().RequestWith(ctx, su)).(*kmsg.ListGroupsResponse).Groups {
		add("group %s", g.Group)
		of := kmsg.NewPtrOffsetFetchRequest()
		og := kmsg.NewOffsetFetchRequestGroup()
		og.Group = g.Group
		of.Groups = append(of.Groups, og)
		for _, rg := range must(of.RequestWith(ctx, su)).(*kmsg.OffsetFetchResponse).Groups {
			for _, rt := range rg.Topics {
				for _, rp := range rt.Partitions {
					add("committed %s %s%x/%d=%d", g.Group, rt.Topic, rt.TopicID, rp.Partition, rp.Offset)
				}
			}
		}
	}
	da := kmsg.NewPtrDescribeACLsRequest()
	da.ResourceType, da.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
	da.Operation, da.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
	for _, res := range must(da.RequestWith(ctx, su)).(*kmsg.DescribeACLsResponse).Resources {
		for _, a := range res.ACLs {
			add("acl %s %s %s %s %s %s %s", res.ResourceType, res.ResourceName, res.ResourcePatternType, a.Principal, a.Host, a.Operation, a.PermissionType)
		}
	}
	for _, r := range must(kmsg.NewPtrDescribeUserSCRAMCredentialsRequest().RequestWith(ctx, su)).(*kmsg.DescribeUserSCRAMCredentialsResponse).Results {
		for _, c := range r.CredentialInfos {
			add("scram %s mechanism=%d iterations=%d", r.User, c.Mechanism, c.Iterations)
		}
	}
	for _, ts := range must(kmsg.NewPtrListTransactionsRequest().RequestWith(ctx, su)).(*kmsg.ListTransactionsResponse).TransactionStates {
		add("transaction %s pid=%d state=%s", ts.TransactionalID, ts.ProducerID, ts.TransactionState)
	}
	for _, e := range must(kmsg.NewPtrDescribeClientQuotasRequest().RequestWith(ctx, su)).(*kmsg.DescribeClientQuotasResponse).Entries {
		for _, v := range e.Values {
			add("quota %v %s=%v", quotaEntity(e.Entity), v.Key, v.Value)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func derefOr(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

func quotaEntity(es []kmsg.DescribeClientQuotasResponseEntryEntity) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, e.Type+"="+derefOr(e.Name))
	}
	return strings.Join(parts, ",")
}

// revokeAll deletes every ACL naming principal, so each row of the table
// starts from none.
func revokeAll(t *testing.T, adm *kadm.Client, principal string) {
	t.Helper()
	ctx := context.Background()
	for _, f := range []*kadm.ACLBuilder{
		kadm.NewACLs().AnyResource().Allow(principal).AllowHosts().ResourcePatternType(kadm.ACLPatternAny).Operations(kadm.OpAny),
		kadm.NewACLs().AnyResource().Deny(principal).DenyHosts().ResourcePatternType(kadm.ACLPatternAny).Operations(kadm.OpAny),
	} {
		if _, err := adm.DeleteACLs(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	left, err := adm.DescribeACLs(ctx, kadm.NewACLs().AnyResource().Allow(principal).AllowHosts().Deny(principal).DenyHosts().ResourcePatternType(kadm.ACLPatternAny).Operations(kadm.OpAny))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range left {
		if len(r.Described) > 0 {
			t.Fatalf("ACLs of %s left after revoking: %+v", principal, r.Described)
		}
	}
}

// apiAuthzCase is one row of TestAuthorizationEveryAPIKey.
type apiAuthzCase struct {
	key  int16
	name string
	// noAuthz says why Kafka checks nothing for this key; the request
	// (if any) must pass without an ACL.
	noAuthz string
	req     func() kmsg.Request
	// want is the code Kafka answers without the ACL; every error code
	// in the answer must be it.
	want *kerr.Error
	// grant is what Kafka requires; with it no authorization error is
	// left (other errors, e.g. an unknown producer id, are fine: the
	// request got past authorization).
	grant []*kadm.ACLBuilder
	// listed checks a listing that filters instead of failing: deniedView
	// true without the ACL, false with it.
	listed func(resp kmsg.Response, deniedView bool) error
	// pinned sends through bob's client that speaks AddPartitionsToTxn
	// at most v3 (the client-facing version).
	pinned bool
	// served, if set, checks the answer with the ACL further.
	served func(kmsg.Response) error
	// refusal, if set, checks the answer without the ACL further.
	refusal func(kmsg.Response) error
}

func allow() *kadm.ACLBuilder { return kadm.NewACLs().Allow("User:bob") }

// TestAuthorizationEveryAPIKey: for every API key the broker advertises
// in ApiVersions, a principal without ACLs is refused with Kafka's code
// (or, for listings, sees nothing) and no state changes; with the ACL
// Kafka requires (often through an implied operation) the request gets
// past authorization. Keys Kafka does not authorize have a row saying
// why. A key served without a row fails the test.
func TestAuthorizationEveryAPIKey(t *testing.T) {
	b, adm, bob, _ := authzBroker(t)
	ctx := context.Background()
	su, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(su.Close)
	v3 := kversion.Stable()
	v3.SetMaxKeyVersion(int16(kmsg.AddPartitionsToTxn), 3)
	bobV3, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("SASL_PLAINTEXT")), kgo.MaxVersions(v3),
		kgo.SASL(scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism()), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bobV3.Close)

	topicNames := []string{"produce", "fetch", "listoff", "meta", "commit", "offfetch", "epoch", "delrec", "doomed",
		"cfg", "altercfg", "incr", "parts", "offdel", "txncommit", "addparts", "producers", "doomed-id", "share"}
	for _, name := range topicNames {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, name); err != nil {
			t.Fatal(err)
		}
		if err := su.ProduceSync(ctx, &kgo.Record{Topic: name, Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := func(name string) [16]byte { return td[name].ID }
	for _, g := range []string{"describe-g", "list-g", "delete-g", "offdel-g", "offfetch-g"} {
		topic := "offdel"
		if _, err := adm.CommitOffsets(ctx, g, kadm.OffsetsFromRecords(kgo.Record{Topic: topic, Partition: 0, Offset: 0})); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{"sf-g", "sa-g"} { // share groups the share rows reach
		req := kmsg.NewPtrAlterShareGroupOffsetsRequest()
		req.GroupID = g
		if resp, err := req.RequestWith(ctx, su); err != nil || resp.ErrorCode != 0 {
			t.Fatalf("creating share group %s: %v %v", g, err, resp)
		}
	}
	for _, txid := range []string{"tx-desc", "tx-end"} {
		if _, _, code := initPID(t, su, txid); code != 0 {
			t.Fatalf("InitProducerId %s: %v", txid, kerr.ErrorForCode(code))
		}
	}
	grant(t, adm, kadm.NewACLs().Allow("User:carol").Topics("keep").Operations(kadm.OpRead))
	node := bob.Broker(int(td["produce"].Partitions[0].Leader))
	nodeV3 := bobV3.Broker(int(td["produce"].Partitions[0].Leader))

	str := kmsg.StringPtr
	cases := []apiAuthzCase{
		{key: 0, name: "Produce", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("produce").Operations(kadm.OpWrite)},
			req: func() kmsg.Request { return testenv.ProduceRequest("produce", 0, testenv.Batch("x")) }},
		{key: 0, name: "Produce transactional", want: kerr.TransactionalIDAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Topics("produce").Operations(kadm.OpWrite), allow().TransactionalIDs("tx-produce").Operations(kadm.OpWrite)},
			req: func() kmsg.Request {
				r := testenv.ProduceRequest("produce", 0, txnBatch(999999, 0, 0, "x"))
				r.TransactionID = str("tx-produce")
				return r
			}},
		{key: 1, name: "Fetch", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("fetch").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrFetchRequest()
				r.MaxBytes, r.MaxWaitMillis = 1<<20, 10
				rt := kmsg.NewFetchRequestTopic()
				rt.Topic, rt.TopicID = "fetch", id("fetch")
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.PartitionMaxBytes = 1 << 20
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 2, name: "ListOffsets", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("listoff").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrListOffsetsRequest()
				rt := kmsg.NewListOffsetsRequestTopic()
				rt.Topic = "listoff"
				rp := kmsg.NewListOffsetsRequestTopicPartition()
				rp.Timestamp = -1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 3, name: "Metadata named", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("meta").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrMetadataRequest()
				mt := kmsg.NewMetadataRequestTopic()
				mt.Topic = str("meta")
				r.Topics = append(r.Topics, mt)
				return r
			}},
		{key: 3, name: "Metadata all topics", grant: []*kadm.ACLBuilder{allow().Topics("me").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpRead)},
			req: func() kmsg.Request { return kmsg.NewPtrMetadataRequest() },
			listed: func(resp kmsg.Response, deniedView bool) error {
				var names []string
				for _, mt := range resp.(*kmsg.MetadataResponse).Topics {
					names = append(names, *mt.Topic)
				}
				if want := map[bool][]string{true: nil, false: {"meta"}}[deniedView]; !slices.Equal(names, want) {
					return fmt.Errorf("listed %v, want %v", names, want)
				}
				return nil
			}},
		{key: 8, name: "OffsetCommit", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("commit-g").Operations(kadm.OpRead), allow().Topics("commit").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetCommitRequest()
				r.Group, r.Generation = "commit-g", -1
				rt := kmsg.NewOffsetCommitRequestTopic()
				rt.Topic, rt.TopicID = "commit", id("commit")
				rp := kmsg.NewOffsetCommitRequestTopicPartition()
				rp.Offset = 1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 9, name: "OffsetFetch", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("offfetch-g").Operations(kadm.OpDescribe), allow().Topics("offdel").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetFetchRequest()
				g := kmsg.NewOffsetFetchRequestGroup()
				g.Group = "offfetch-g"
				gt := kmsg.NewOffsetFetchRequestGroupTopic()
				gt.Topic, gt.TopicID, gt.Partitions = "offdel", id("offdel"), []int32{0}
				g.Topics = append(g.Topics, gt)
				r.Groups = append(r.Groups, g)
				return r
			}},
		{key: 10, name: "FindCoordinator group", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("fc-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrFindCoordinatorRequest()
				r.CoordinatorKey, r.CoordinatorKeys = "fc-g", []string{"fc-g"}
				return r
			}},
		{key: 10, name: "FindCoordinator transaction", want: kerr.TransactionalIDAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().TransactionalIDs("fc-tx").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrFindCoordinatorRequest()
				r.CoordinatorType, r.CoordinatorKey, r.CoordinatorKeys = 1, "fc-tx", []string{"fc-tx"}
				return r
			}},
		{key: 11, name: "JoinGroup", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("join-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrJoinGroupRequest()
				r.Group, r.ProtocolType, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis = "join-g", "consumer", 10000, 10000
				p := kmsg.NewJoinGroupRequestProtocol()
				p.Name = "range"
				r.Protocols = append(r.Protocols, p)
				return r
			}},
		{key: 12, name: "Heartbeat", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("hb-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrHeartbeatRequest()
				r.Group, r.MemberID, r.Generation = "hb-g", "m", 1
				return r
			}},
		{key: 13, name: "LeaveGroup", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("leave-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrLeaveGroupRequest()
				r.Group, r.MemberID = "leave-g", "m"
				m := kmsg.NewLeaveGroupRequestMember()
				m.MemberID = "m"
				r.Members = append(r.Members, m)
				return r
			}},
		{key: 14, name: "SyncGroup", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("sync-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrSyncGroupRequest()
				r.Group, r.MemberID, r.Generation = "sync-g", "m", 1
				r.ProtocolType, r.Protocol = str("consumer"), str("range")
				return r
			}},
		{key: 15, name: "DescribeGroups", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("describe-g").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeGroupsRequest()
				r.Groups = []string{"describe-g"}
				return r
			}},
		{key: 16, name: "ListGroups", grant: []*kadm.ACLBuilder{allow().Groups("list-g").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request { return kmsg.NewPtrListGroupsRequest() },
			listed: func(resp kmsg.Response, deniedView bool) error {
				var names []string
				for _, g := range resp.(*kmsg.ListGroupsResponse).Groups {
					names = append(names, g.Group)
				}
				if want := map[bool][]string{true: nil, false: {"list-g"}}[deniedView]; !slices.Equal(names, want) {
					return fmt.Errorf("listed %v, want %v", names, want)
				}
				return nil
			}},
		{key: 17, name: "SaslHandshake", noAuthz: "authentication: it runs before there is a principal to authorize"},
		{key: 18, name: "ApiVersions", noAuthz: "Kafka answers it to anyone, before and after authentication",
			req: func() kmsg.Request { return kmsg.NewPtrApiVersionsRequest() }},
		{key: 19, name: "CreateTopics", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("created").Operations(kadm.OpCreate)},
			served: func(resp kmsg.Response) error {
				// CREATE alone: created, but the configs are not bob's to read.
				ct := resp.(*kmsg.CreateTopicsResponse).Topics[0]
				if ct.ErrorCode != 0 || ct.ConfigErrorCode != kerr.TopicAuthorizationFailed.Code || len(ct.Configs) > 0 {
					return fmt.Errorf("created %v, config error %v, %d configs", kerr.ErrorForCode(ct.ErrorCode), kerr.ErrorForCode(ct.ConfigErrorCode), len(ct.Configs))
				}
				return nil
			},
			req: func() kmsg.Request {
				r := kmsg.NewPtrCreateTopicsRequest()
				ct := kmsg.NewCreateTopicsRequestTopic()
				ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "created", 1, 1
				r.Topics = append(r.Topics, ct)
				return r
			}},
		{key: 20, name: "DeleteTopics", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("doomed").Operations(kadm.OpDelete)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteTopicsRequest()
				dt := kmsg.NewDeleteTopicsRequestTopic()
				dt.Topic = str("doomed")
				r.Topics, r.TopicNames = append(r.Topics, dt), []string{"doomed"}
				return r
			}},
		{key: 20, name: "DeleteTopics by id", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("doomed-id").Operations(kadm.OpDelete)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteTopicsRequest()
				dt := kmsg.NewDeleteTopicsRequestTopic()
				dt.TopicID = id("doomed-id")
				r.Topics = append(r.Topics, dt)
				return r
			},
			refusal: func(resp kmsg.Response) error {
				if name := resp.(*kmsg.DeleteTopicsResponse).Topics[0].Topic; name != nil {
					return fmt.Errorf("the answer names the topic %q to a principal that may not describe it", *name)
				}
				return nil
			}},
		{key: 21, name: "DeleteRecords", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("delrec").Operations(kadm.OpDelete)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteRecordsRequest()
				rt := kmsg.NewDeleteRecordsRequestTopic()
				rt.Topic = "delrec"
				rp := kmsg.NewDeleteRecordsRequestTopicPartition()
				rp.Offset = 1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics, r.TimeoutMillis = append(r.Topics, rt), 5000
				return r
			}},
		{key: 22, name: "InitProducerId transactional", want: kerr.TransactionalIDAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-init").Operations(kadm.OpWrite)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrInitProducerIDRequest()
				r.TransactionalID, r.TransactionTimeoutMillis = str("tx-init"), 60000
				return r
			}},
		{key: 22, name: "InitProducerId idempotent", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpIdempotentWrite)},
			req: func() kmsg.Request { return kmsg.NewPtrInitProducerIDRequest() }},
		{key: 22, name: "InitProducerId idempotent, WRITE on a topic", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("produce").Operations(kadm.OpWrite)},
			req: func() kmsg.Request { return kmsg.NewPtrInitProducerIDRequest() }},
		{key: 23, name: "OffsetForLeaderEpoch", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("epoch").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetForLeaderEpochRequest()
				r.ReplicaID = -1
				rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
				rt.Topic = "epoch"
				rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
				rp.CurrentLeaderEpoch, rp.LeaderEpoch = -1, 0
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 24, name: "AddPartitionsToTxn v3", want: kerr.TransactionalIDAuthorizationFailed, pinned: true,
			grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-add").Operations(kadm.OpWrite), allow().Topics("addparts").Operations(kadm.OpWrite)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAddPartitionsToTxnRequest()
				r.TransactionalID, r.ProducerID, r.ProducerEpoch = "tx-add", 999999, 0
				rt := kmsg.NewAddPartitionsToTxnRequestTopic()
				rt.Topic, rt.Partitions = "addparts", []int32{0}
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 24, name: "AddPartitionsToTxn v4+ (broker to broker)", want: kerr.ClusterAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpClusterAction)}, // nothing on the id or topic, as Kafka
			req: func() kmsg.Request {
				r := kmsg.NewPtrAddPartitionsToTxnRequest()
				tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
				tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch, tx.VerifyOnly = "tx-add", 999999, 0, true
				tt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
				tt.Topic, tt.Partitions = "addparts", []int32{0}
				tx.Topics = append(tx.Topics, tt)
				r.Transactions = append(r.Transactions, tx)
				return r
			}},
		{key: 25, name: "AddOffsetsToTxn", want: kerr.TransactionalIDAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-offs").Operations(kadm.OpWrite), allow().Groups("offs-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAddOffsetsToTxnRequest()
				r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Group = "tx-offs", 999999, 0, "offs-g"
				return r
			}},
		{key: 26, name: "EndTxn", want: kerr.TransactionalIDAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-end").Operations(kadm.OpWrite)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrEndTxnRequest()
				r.TransactionalID, r.ProducerID, r.ProducerEpoch = "tx-end", 999999, 0
				return r
			}},
		{key: 27, name: "WriteTxnMarkers", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpClusterAction)},
			req: func() kmsg.Request { return writeMarkers("produce") }},
		{key: 27, name: "WriteTxnMarkers with ALTER on the cluster", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request { return writeMarkers("produce") }},
		{key: 28, name: "TxnOffsetCommit", want: kerr.TransactionalIDAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-toc").Operations(kadm.OpWrite), allow().Groups("toc-g").Operations(kadm.OpRead), allow().Topics("txncommit").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrTxnOffsetCommitRequest()
				r.TransactionalID, r.Group, r.ProducerID, r.ProducerEpoch, r.Generation = "tx-toc", "toc-g", 999999, 0, -1
				rt := kmsg.NewTxnOffsetCommitRequestTopic()
				rt.Topic = "txncommit"
				rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
				rp.Offset = 1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 29, name: "DescribeAcls", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeACLsRequest()
				r.ResourceType, r.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
				r.Operation, r.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
				return r
			}},
		{key: 30, name: "CreateAcls", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrCreateACLsRequest()
				c := kmsg.NewCreateACLsRequestCreation()
				c.ResourceType, c.ResourceName, c.ResourcePatternType = kmsg.ACLResourceTypeTopic, "x", kmsg.ACLResourcePatternTypeLiteral
				c.Principal, c.Host, c.Operation, c.PermissionType = "User:mallory", "*", kmsg.ACLOperationAll, kmsg.ACLPermissionTypeAllow
				r.Creations = append(r.Creations, c)
				return r
			}},
		{key: 31, name: "DeleteAcls", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteACLsRequest()
				f := kmsg.NewDeleteACLsRequestFilter()
				f.ResourceType, f.ResourceName, f.ResourcePatternType = kmsg.ACLResourceTypeTopic, str("keep"), kmsg.ACLResourcePatternTypeAny
				f.Operation, f.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
				r.Filters = append(r.Filters, f)
				return r
			}},
		{key: 32, name: "DescribeConfigs topic", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("cfg").Operations(kadm.OpAlterConfigs)},
			req: func() kmsg.Request { return describeConfigs(kmsg.ConfigResourceTypeTopic, "cfg") }},
		{key: 32, name: "DescribeConfigs broker", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpDescribeConfigs)},
			req: func() kmsg.Request { return describeConfigs(kmsg.ConfigResourceTypeBroker, "") }},
		{key: 33, name: "AlterConfigs", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("altercfg").Operations(kadm.OpAlterConfigs)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterConfigsRequest()
				rr := kmsg.NewAlterConfigsRequestResource()
				rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, "altercfg"
				c := kmsg.NewAlterConfigsRequestResourceConfig()
				c.Name, c.Value = "retention.ms", str("1000")
				rr.Configs = append(rr.Configs, c)
				r.Resources = append(r.Resources, rr)
				return r
			}},
		{key: 36, name: "SaslAuthenticate", noAuthz: "authentication: it runs before there is a principal to authorize"},
		{key: 37, name: "CreatePartitions", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("parts").Operations(kadm.OpAlter)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrCreatePartitionsRequest()
				rt := kmsg.NewCreatePartitionsRequestTopic()
				rt.Topic, rt.Count = "parts", 2
				r.Topics, r.TimeoutMillis = append(r.Topics, rt), 5000
				return r
			}},
		{key: 42, name: "DeleteGroups", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("delete-g").Operations(kadm.OpDelete)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteGroupsRequest()
				r.Groups = []string{"delete-g"}
				return r
			}},
		{key: 44, name: "IncrementalAlterConfigs topic", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("incr").Operations(kadm.OpAlterConfigs)},
			req: func() kmsg.Request {
				return incrementalAlter(kmsg.ConfigResourceTypeTopic, "incr", "retention.ms", false)
			}},
		{key: 44, name: "IncrementalAlterConfigs broker", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlterConfigs)},
			req: func() kmsg.Request {
				return incrementalAlter(kmsg.ConfigResourceTypeBroker, "", "log.retention.ms", true)
			}},
		{key: 47, name: "OffsetDelete", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("offdel-g").Operations(kadm.OpDelete), allow().Topics("offdel").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetDeleteRequest()
				r.Group = "offdel-g"
				rt := kmsg.NewOffsetDeleteRequestTopic()
				rt.Topic = "offdel"
				rt.Partitions = append(rt.Partitions, kmsg.NewOffsetDeleteRequestTopicPartition())
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 48, name: "DescribeClientQuotas", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlterConfigs)},
			req: func() kmsg.Request { return kmsg.NewPtrDescribeClientQuotasRequest() }},
		{key: 49, name: "AlterClientQuotas", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlterConfigs)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterClientQuotasRequest()
				e := kmsg.NewAlterClientQuotasRequestEntry()
				ee := kmsg.NewAlterClientQuotasRequestEntryEntity()
				ee.Type, ee.Name = "user", str("mallory")
				e.Entity = append(e.Entity, ee)
				op := kmsg.NewAlterClientQuotasRequestEntryOp()
				op.Key, op.Value = "producer_byte_rate", 1024
				e.Ops = append(e.Ops, op)
				r.Entries = append(r.Entries, e)
				return r
			}},
		{key: 50, name: "DescribeUserScramCredentials", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request { return kmsg.NewPtrDescribeUserSCRAMCredentialsRequest() }},
		{key: 51, name: "AlterUserScramCredentials", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
				u := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
				u.Name, u.Mechanism, u.Iterations = "dave", 1, 4096
				u.Salt, u.SaltedPassword = []byte("0123456789abcdef"), make([]byte, 32)
				r.Upsertions = append(r.Upsertions, u)
				return r
			}},
		{key: 55, name: "DescribeQuorum", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeQuorumRequest()
				rt := kmsg.NewDescribeQuorumRequestTopic()
				rt.Topic = "__cluster_metadata"
				rt.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 60, name: "DescribeCluster", noAuthz: "Kafka answers every principal (only the authorized-operations field depends on ACLs)",
			req: func() kmsg.Request { return kmsg.NewPtrDescribeClusterRequest() }},
		{key: 61, name: "DescribeProducers", want: kerr.TopicAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Topics("producers").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeProducersRequest()
				rt := kmsg.NewDescribeProducersRequestTopic()
				rt.Topic, rt.Partitions = "producers", []int32{0}
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 65, name: "DescribeTransactions", want: kerr.TransactionalIDAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-desc").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeTransactionsRequest()
				r.TransactionalIDs = []string{"tx-desc"}
				return r
			}},
		{key: 66, name: "ListTransactions", grant: []*kadm.ACLBuilder{allow().TransactionalIDs("tx-d").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpWrite)},
			req: func() kmsg.Request { return kmsg.NewPtrListTransactionsRequest() },
			listed: func(resp kmsg.Response, deniedView bool) error {
				var ids []string
				for _, ts := range resp.(*kmsg.ListTransactionsResponse).TransactionStates {
					ids = append(ids, ts.TransactionalID)
				}
				if want := map[bool][]string{true: nil, false: {"tx-desc"}}[deniedView]; !slices.Equal(ids, want) {
					return fmt.Errorf("listed %v, want %v", ids, want)
				}
				return nil
			}},
		{key: 68, name: "ConsumerGroupHeartbeat", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("cgh-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrConsumerGroupHeartbeatRequest()
				r.Group, r.MemberID, r.MemberEpoch = "cgh-g", "nobody", -1
				return r
			}},
		{key: 69, name: "ConsumerGroupDescribe", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("cgd-g").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrConsumerGroupDescribeRequest()
				r.Groups = []string{"cgd-g"}
				return r
			}},
		{key: 76, name: "ShareGroupHeartbeat", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("sgh-g").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrShareGroupHeartbeatRequest()
				r.GroupID, r.MemberID, r.MemberEpoch = "sgh-g", "nobody", -1
				return r
			}},
		{key: 77, name: "ShareGroupDescribe", want: kerr.GroupAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Groups("sgd-g").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrShareGroupDescribeRequest()
				r.GroupIDs = []string{"sgd-g"}
				return r
			}},
		{key: 78, name: "ShareFetch", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("sf-g").Operations(kadm.OpRead), allow().Topics("share").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrShareFetchRequest()
				r.GroupID, r.MemberID, r.ShareSessionEpoch = str("sf-g"), str("m"), 0
				rt := kmsg.NewShareFetchRequestTopic()
				rt.TopicID = id("share")
				rp := kmsg.NewShareFetchRequestTopicPartition()
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			},
			served: func(resp kmsg.Response) error {
				r := resp.(*kmsg.ShareFetchResponse)
				if r.ErrorCode != 0 || len(r.Topics) != 1 || r.Topics[0].Partitions[0].ErrorCode != 0 {
					return fmt.Errorf("ShareFetch with the ACLs: %+v", r)
				}
				return nil
			}},
		{key: 79, name: "ShareAcknowledge", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("sa-g").Operations(kadm.OpRead), allow().Topics("share").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrShareAcknowledgeRequest()
				r.GroupID, r.MemberID, r.ShareSessionEpoch = str("sa-g"), str("m"), 1
				rt := kmsg.NewShareAcknowledgeRequestTopic()
				rt.TopicID = id("share")
				rp := kmsg.NewShareAcknowledgeRequestTopicPartition()
				rp.AcknowledgementBatches = []kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch{{FirstOffset: 0, LastOffset: 0, AcknowledgeTypes: []int8{1}}}
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
				return r
			}},
		{key: 80, name: "AddRaftVoter", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAddRaftVoterRequest()
				r.VoterID = 4
				r.Listeners = []kmsg.AddRaftVoterRequestListener{{Name: "CONTROLLER", Host: "127.0.0.1", Port: 1}}
				return r
			}},
		{key: 81, name: "RemoveRaftVoter", want: kerr.ClusterAuthorizationFailed, grant: []*kadm.ACLBuilder{allow().Clusters().Operations(kadm.OpAlter)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrRemoveRaftVoterRequest()
				r.VoterID = 4
				return r
			}},
		{key: 90, name: "DescribeShareGroupOffsets", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("dsgo-g").Operations(kadm.OpDescribe), allow().Topics("share").Operations(kadm.OpDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeShareGroupOffsetsRequest()
				rg := kmsg.NewDescribeShareGroupOffsetsRequestGroup()
				rg.GroupID = "dsgo-g"
				rg.Topics = []kmsg.DescribeShareGroupOffsetsRequestGroupTopic{{Topic: "share", Partitions: []int32{0}}}
				r.Groups = append(r.Groups, rg)
				return r
			}},
		{key: 91, name: "AlterShareGroupOffsets", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("asgo-g").Operations(kadm.OpRead), allow().Topics("share").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterShareGroupOffsetsRequest()
				r.GroupID = "asgo-g"
				r.Topics = []kmsg.AlterShareGroupOffsetsRequestTopic{{Topic: "share", Partitions: []kmsg.AlterShareGroupOffsetsRequestTopicPartition{{Partition: 0, StartOffset: 0}}}}
				return r
			}},
		{key: 92, name: "DeleteShareGroupOffsets", want: kerr.GroupAuthorizationFailed,
			grant: []*kadm.ACLBuilder{allow().Groups("dlsgo-g").Operations(kadm.OpDelete), allow().Topics("share").Operations(kadm.OpRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteShareGroupOffsetsRequest()
				r.GroupID = "dlsgo-g"
				r.Topics = []kmsg.DeleteShareGroupOffsetsRequestTopic{{Topic: "share"}}
				return r
			}},
	}

	// The keys come from the broker's own ApiVersions, so a key served
	// later without a row here fails.
	av, err := node.Request(ctx, kmsg.NewPtrApiVersionsRequest())
	if err != nil {
		t.Fatal(err)
	}
	covered := map[int16]bool{}
	for _, tc := range cases {
		covered[tc.key] = true
	}
	advertised := map[int16]bool{}
	for _, k := range av.(*kmsg.ApiVersionsResponse).ApiKeys {
		advertised[k.ApiKey] = true
		if !covered[k.ApiKey] {
			t.Errorf("API key %d (%s) is served but has no row: add what Kafka checks for it", k.ApiKey, kmsg.NameForKey(k.ApiKey))
		}
	}
	for k := range covered {
		if !advertised[k] {
			t.Errorf("a row tests API key %d (%s), which the broker does not advertise", k, kmsg.NameForKey(k))
		}
	}

	for _, tc := range cases {
		t.Run(fmt.Sprintf("%02d %s", tc.key, tc.name), func(t *testing.T) {
			revokeAll(t, adm, "User:bob")
			if tc.req == nil {
				if tc.noAuthz == "" {
					t.Fatal("a row without a request must say why Kafka authorizes nothing")
				}
				t.Skip("not sent on an authenticated connection: " + tc.noAuthz)
			}
			send := func() kmsg.Response {
				t.Helper()
				n := node
				if tc.pinned {
					n = nodeV3
				}
				rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				resp, err := n.Request(rctx, tc.req())
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			before := clusterState(t, su)
			resp := send()
			after := clusterState(t, su)
			if before != after {
				t.Errorf("the refused request changed state:\n--- before\n%s\n--- after\n%s", before, after)
			}
			codes := errorCodes(resp)
			switch {
			case tc.noAuthz != "":
				for _, c := range codes {
					if slices.Contains(authzFailures, c) {
						t.Fatalf("no ACL needed (%s), but answered %v", tc.noAuthz, kerr.ErrorForCode(c))
					}
				}
				return
			case tc.listed != nil:
				if err := tc.listed(resp, true); err != nil {
					t.Fatalf("without an ACL: %v", err)
				}
			case tc.refusal != nil:
				if err := tc.refusal(resp); err != nil {
					t.Fatalf("without an ACL: %v", err)
				}
				fallthrough
			default:
				if !slices.Contains(codes, tc.want.Code) {
					t.Fatalf("without an ACL: codes %v, want %v", codes, tc.want)
				}
				for _, c := range codes {
					if c != 0 && c != tc.want.Code {
						t.Fatalf("without an ACL: %v besides %v", kerr.ErrorForCode(c), tc.want)
					}
				}
			}
			for _, g := range tc.grant {
				grant(t, adm, g)
			}
			resp = send()
			if tc.listed != nil {
				if err := tc.listed(resp, false); err != nil {
					t.Fatalf("with the ACL: %v", err)
				}
			}
			for _, c := range errorCodes(resp) {
				if slices.Contains(authzFailures, c) {
					t.Fatalf("with the ACL still %v", kerr.ErrorForCode(c))
				}
			}
			if tc.served != nil {
				if err := tc.served(resp); err != nil {
					t.Fatalf("with the ACL: %v", err)
				}
			}
		})
	}
}

func writeMarkers(topic string) *kmsg.WriteTxnMarkersRequest {
	r := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch = 999999, 0
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = topic, []int32{0}
	m.Topics = append(m.Topics, mt)
	r.Markers = append(r.Markers, m)
	return r
}

func describeConfigs(typ kmsg.ConfigResourceType, name string) *kmsg.DescribeConfigsRequest {
	r := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = typ, name
	r.Resources = append(r.Resources, rr)
	return r
}

func incrementalAlter(typ kmsg.ConfigResourceType, name, key string, validateOnly bool) *kmsg.IncrementalAlterConfigsRequest {
	r := kmsg.NewPtrIncrementalAlterConfigsRequest()
	r.ValidateOnly = validateOnly
	rr := kmsg.NewIncrementalAlterConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = typ, name
	c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	c.Name, c.Value = key, kmsg.StringPtr("1000")
	rr.Configs = append(rr.Configs, c)
	r.Resources = append(r.Resources, rr)
	return r
}

// codesByResource maps each topic, group or config resource a response
// names to the error codes under it; topics named only by id are looked
// up in ids.
func codesByResource(resp kmsg.Response, ids map[[16]byte]string) map[string][]int16 {
	out := map[string][]int16{}
	var walk func(v reflect.Value, owner string)
	walk = func(v reflect.Value, owner string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem(), owner)
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i), owner)
			}
		case reflect.Struct:
			for _, name := range []string{"Topic", "Group", "ResourceName", "Name"} {
				f := v.FieldByName(name)
				switch {
				case f.IsValid() && f.Kind() == reflect.String:
					owner = f.String()
				case f.IsValid() && f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.String && !f.IsNil():
					owner = f.Elem().String()
				default:
					continue
				}
				break
			}
			if f := v.FieldByName("TopicID"); f.IsValid() && f.Type() == reflect.TypeOf([16]byte{}) {
				if name, ok := ids[f.Interface().([16]byte)]; ok {
					owner = name
				}
			}
			for i := range v.NumField() {
				f := v.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				if f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16 {
					out[owner] = append(out[owner], int16(v.Field(i).Int()))
					continue
				}
				walk(v.Field(i), owner)
			}
		}
	}
	walk(reflect.ValueOf(resp), "")
	return out
}

// stateOf keeps the lines of a clusterState snapshot that mention s.
func stateOf(state, s string) string {
	var kept []string
	for _, l := range strings.Split(state, "\n") {
		if strings.Contains(l, s) {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "\n")
}

// TestAuthorizationPartialDenials: a request naming resources bob may use
// (ok-*) and resources he may not (no-*) is answered per resource, as
// Kafka answers it: the denied ones get their AUTHORIZATION_FAILED code
// (GROUP_ for the no-g group, TOPIC_ for no-* topics) and stay untouched,
// the allowed ones are served. An OffsetFetch of every committed topic
// leaves out those bob may not describe.
func TestAuthorizationPartialDenials(t *testing.T) {
	b, adm, bob, _ := authzBroker(t)
	ctx := context.Background()
	su, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(su.Close)
	v7 := kversion.Stable()
	v7.SetMaxKeyVersion(int16(kmsg.OffsetFetch), 7)
	bobV7, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("SASL_PLAINTEXT")), kgo.MaxVersions(v7),
		kgo.SASL(scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism()), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bobV7.Close)
	for _, name := range []string{"ok-t", "no-t", "ok-del", "no-del"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, name); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := su.ProduceSync(ctx, &kgo.Record{Topic: name, Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, g := range []string{"ok-g", "no-g", "ok-gone"} {
		os := kadm.OffsetsFromRecords(kgo.Record{Topic: "ok-t", Partition: 0, Offset: 0}, kgo.Record{Topic: "no-t", Partition: 0, Offset: 0})
		if g == "ok-gone" { // deleting it must not touch a no-* line
			os = kadm.OffsetsFromRecords(kgo.Record{Topic: "ok-t", Partition: 0, Offset: 0})
		}
		if _, err := adm.CommitOffsets(ctx, g, os); err != nil {
			t.Fatal(err)
		}
	}
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []func(*kadm.ACLBuilder) *kadm.ACLBuilder{
		func(a *kadm.ACLBuilder) *kadm.ACLBuilder { return a.Topics("ok-") },
		func(a *kadm.ACLBuilder) *kadm.ACLBuilder { return a.Groups("ok-") },
		func(a *kadm.ACLBuilder) *kadm.ACLBuilder { return a.TransactionalIDs("ok-") },
	} {
		grant(t, adm, kind(allow()).ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpAll))
	}
	ids := map[[16]byte]string{}
	for name, d := range td {
		ids[d.ID] = name
	}
	node := bob.Broker(int(td["ok-t"].Partitions[0].Leader))
	nodeV7 := bobV7.Broker(int(td["ok-t"].Partitions[0].Leader))
	committed := func(g, topic string) int64 {
		t.Helper()
		offs, err := adm.FetchOffsets(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		o, ok := offs.Lookup(topic, 0)
		if !ok {
			return -1
		}
		return o.At
	}

	txPID, txEpoch, code := initPID(t, su, "ok-tx")
	if code != 0 {
		t.Fatalf("InitProducerId: %v", kerr.ErrorForCode(code))
	}
	// Topics are named ok-t / no-t (and ok-del / no-del, ok-new / no-new
	// where the request creates or deletes them); groups ok-g / no-g.
	topicPair := func(ok, no string) []string { return []string{ok, no} }
	cases := []struct {
		name string
		req  func() kmsg.Request
		// served checks the allowed part took effect (nil: no
		// authorization error under ok-* is enough).
		served func() error
		pinV7  bool
	}{
		{name: "DescribeGroups", req: func() kmsg.Request {
			r := kmsg.NewPtrDescribeGroupsRequest()
			r.Groups = []string{"ok-g", "no-g"}
			return r
		}},
		{name: "DeleteGroups", req: func() kmsg.Request {
			r := kmsg.NewPtrDeleteGroupsRequest()
			r.Groups = []string{"ok-gone", "no-g"}
			return r
		}, served: func() error {
			if o := committed("ok-gone", "ok-t"); o != -1 {
				return fmt.Errorf("ok-gone still has offset %d", o)
			}
			return nil
		}},
		{name: "ConsumerGroupDescribe", req: func() kmsg.Request {
			r := kmsg.NewPtrConsumerGroupDescribeRequest()
			r.Groups = []string{"ok-g", "no-g"}
			return r
		}},
		{name: "OffsetFetch v8+ groups and topics", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			for _, g := range []string{"ok-g", "no-g"} {
				rg := kmsg.NewOffsetFetchRequestGroup()
				rg.Group = g
				for _, name := range topicPair("ok-t", "no-t") {
					gt := kmsg.NewOffsetFetchRequestGroupTopic()
					gt.Topic, gt.TopicID, gt.Partitions = name, td[name].ID, []int32{0}
					rg.Topics = append(rg.Topics, gt)
				}
				r.Groups = append(r.Groups, rg)
			}
			return r
		}},
		{name: "OffsetFetch v7 topics", pinV7: true, req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Group = "ok-g"
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewOffsetFetchRequestTopic()
				rt.Topic, rt.Partitions = name, []int32{0}
				r.Topics = append(r.Topics, rt)
			}
			return r
		}},
		{name: "OffsetCommit", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetCommitRequest()
			r.Group, r.Generation = "ok-g", -1
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewOffsetCommitRequestTopic()
				rt.Topic, rt.TopicID = name, td[name].ID
				rp := kmsg.NewOffsetCommitRequestTopicPartition()
				rp.Offset = 2
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			}
			return r
		}, served: func() error {
			if o := committed("ok-g", "ok-t"); o != 2 {
				return fmt.Errorf("ok-g ok-t committed %d, want 2", o)
			}
			return nil
		}},
		{name: "OffsetDelete", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetDeleteRequest()
			r.Group = "ok-g"
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewOffsetDeleteRequestTopic()
				rt.Topic = name
				rt.Partitions = append(rt.Partitions, kmsg.NewOffsetDeleteRequestTopicPartition())
				r.Topics = append(r.Topics, rt)
			}
			return r
		}, served: func() error {
			if o := committed("ok-g", "ok-t"); o != -1 {
				return fmt.Errorf("ok-g ok-t still committed at %d", o)
			}
			return nil
		}},
		{name: "TxnOffsetCommit", req: func() kmsg.Request {
			r := kmsg.NewPtrTxnOffsetCommitRequest()
			r.TransactionalID, r.Group, r.ProducerID, r.ProducerEpoch, r.Generation = "ok-tx", "ok-g", txPID, txEpoch, -1
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewTxnOffsetCommitRequestTopic()
				rt.Topic = name
				rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
				rp.Offset = 3
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			}
			return r
		}, served: func() error {
			if code := endTxn(t, su, "ok-tx", txPID, txEpoch, true).ErrorCode; code != 0 {
				return fmt.Errorf("committing the transaction: %v", kerr.ErrorForCode(code))
			}
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if committed("ok-g", "ok-t") == 3 {
					if o := committed("ok-g", "no-t"); o != 1 {
						return fmt.Errorf("the denied no-t was committed in the transaction: %d", o)
					}
					return nil
				}
			}
			return fmt.Errorf("ok-g ok-t committed %d after the transaction, want 3", committed("ok-g", "ok-t"))
		}},
		{name: "CreateTopics", req: func() kmsg.Request {
			r := kmsg.NewPtrCreateTopicsRequest()
			for _, name := range topicPair("ok-new", "no-new") {
				ct := kmsg.NewCreateTopicsRequestTopic()
				ct.Topic, ct.NumPartitions, ct.ReplicationFactor = name, 1, 1
				r.Topics = append(r.Topics, ct)
			}
			return r
		}, served: func() error {
			if !slices.Contains(topics(t, b), "ok-new") {
				return fmt.Errorf("ok-new was not created")
			}
			return nil
		}},
		{name: "DeleteTopics", req: func() kmsg.Request {
			r := kmsg.NewPtrDeleteTopicsRequest()
			for _, name := range topicPair("ok-del", "no-del") {
				dt := kmsg.NewDeleteTopicsRequestTopic()
				dt.Topic = kmsg.StringPtr(name)
				r.Topics, r.TopicNames = append(r.Topics, dt), append(r.TopicNames, name)
			}
			return r
		}, served: func() error {
			if slices.Contains(topics(t, b), "ok-del") {
				return fmt.Errorf("ok-del was not deleted")
			}
			return nil
		}},
		{name: "DescribeConfigs", req: func() kmsg.Request {
			r := kmsg.NewPtrDescribeConfigsRequest()
			for _, name := range topicPair("ok-t", "no-t") {
				rr := kmsg.NewDescribeConfigsRequestResource()
				rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, name
				r.Resources = append(r.Resources, rr)
			}
			return r
		}},
		{name: "AlterConfigs", req: func() kmsg.Request {
			r := kmsg.NewPtrAlterConfigsRequest()
			for _, name := range topicPair("ok-t", "no-t") {
				rr := kmsg.NewAlterConfigsRequestResource()
				rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, name
				c := kmsg.NewAlterConfigsRequestResourceConfig()
				c.Name, c.Value = "retention.ms", kmsg.StringPtr("3600000")
				rr.Configs = append(rr.Configs, c)
				r.Resources = append(r.Resources, rr)
			}
			return r
		}},
		{name: "IncrementalAlterConfigs", req: func() kmsg.Request {
			r := kmsg.NewPtrIncrementalAlterConfigsRequest()
			for _, name := range topicPair("ok-t", "no-t") {
				rr := kmsg.NewIncrementalAlterConfigsRequestResource()
				rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, name
				c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
				c.Name, c.Value = "retention.bytes", kmsg.StringPtr("1000000")
				rr.Configs = append(rr.Configs, c)
				r.Resources = append(r.Resources, rr)
			}
			return r
		}},
		{name: "ListOffsets", req: func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewListOffsetsRequestTopic()
				rt.Topic = name
				rp := kmsg.NewListOffsetsRequestTopicPartition()
				rp.Timestamp = -1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			}
			return r
		}},
		{name: "Produce", req: func() kmsg.Request {
			r := testenv.ProduceRequest("ok-t", 0, testenv.Batch("x"))
			r.Topics = append(r.Topics, testenv.ProduceRequest("no-t", 0, testenv.Batch("x")).Topics...)
			return r
		}},
		{name: "Fetch", req: func() kmsg.Request {
			r := kmsg.NewPtrFetchRequest()
			r.MaxBytes, r.MaxWaitMillis = 1<<20, 10
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewFetchRequestTopic()
				rt.Topic, rt.TopicID = name, td[name].ID
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.PartitionMaxBytes = 1 << 20
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			}
			return r
		}},
		{name: "DeleteRecords", req: func() kmsg.Request {
			r := kmsg.NewPtrDeleteRecordsRequest()
			r.TimeoutMillis = 5000
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewDeleteRecordsRequestTopic()
				rt.Topic = name
				rp := kmsg.NewDeleteRecordsRequestTopicPartition()
				rp.Offset = 1
				rt.Partitions = append(rt.Partitions, rp)
				r.Topics = append(r.Topics, rt)
			}
			return r
		}},
		{name: "CreatePartitions", req: func() kmsg.Request {
			r := kmsg.NewPtrCreatePartitionsRequest()
			r.TimeoutMillis = 5000
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewCreatePartitionsRequestTopic()
				rt.Topic, rt.Count = name, 2
				r.Topics = append(r.Topics, rt)
			}
			return r
		}},
		{name: "DescribeProducers", req: func() kmsg.Request {
			r := kmsg.NewPtrDescribeProducersRequest()
			for _, name := range topicPair("ok-t", "no-t") {
				rt := kmsg.NewDescribeProducersRequestTopic()
				rt.Topic, rt.Partitions = name, []int32{0}
				r.Topics = append(r.Topics, rt)
			}
			return r
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := node
			if tc.pinV7 {
				n = nodeV7
			}
			before := stateOf(clusterState(t, su), "no-")
			resp, err := n.Request(ctx, tc.req())
			if err != nil {
				t.Fatal(err)
			}
			if after := stateOf(clusterState(t, su), "no-"); after != before {
				t.Errorf("the denied resources changed:\n--- before\n%s\n--- after\n%s", before, after)
			}
			byRes := codesByResource(resp, ids)
			okSeen, noSeen := false, false
			for res, codes := range byRes {
				switch {
				case strings.HasPrefix(res, "ok-"):
					okSeen = true // other errors (e.g. a classic group to ConsumerGroupDescribe) are not ours
					for _, c := range codes {
						if slices.Contains(authzFailures, c) {
							t.Errorf("%s answered %v", res, kerr.ErrorForCode(c))
						}
					}
				case strings.HasPrefix(res, "no-"):
					noSeen = true
					want := kerr.TopicAuthorizationFailed
					if strings.HasPrefix(res, "no-g") {
						want = kerr.GroupAuthorizationFailed
					}
					for _, c := range codes {
						if c != want.Code {
							t.Errorf("%s answered %v, want %v", res, kerr.ErrorForCode(c), want)
						}
					}
				}
			}
			if !okSeen || !noSeen {
				t.Fatalf("the answer does not name both resources: %v", byRes)
			}
			if tc.served != nil {
				if err := tc.served(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// Every committed topic of ok-g (null topics): no-t is left out.
	os := kadm.OffsetsFromRecords(kgo.Record{Topic: "ok-t", Partition: 0, Offset: 0}, kgo.Record{Topic: "no-t", Partition: 0, Offset: 0})
	if _, err := adm.CommitOffsets(ctx, "ok-g", os); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*kgo.Broker{node, nodeV7} {
		r := kmsg.NewPtrOffsetFetchRequest()
		r.Group = "ok-g"
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = "ok-g"
		r.Groups = append(r.Groups, rg)
		resp, err := n.Request(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		byRes := codesByResource(resp, ids)
		if _, ok := byRes["no-t"]; ok {
			t.Errorf("OffsetFetch v%d of every topic shows no-t: %v", r.Version, byRes)
		}
		if _, ok := byRes["ok-t"]; !ok {
			t.Errorf("OffsetFetch v%d of every topic misses ok-t: %v", r.Version, byRes)
		}
	}
}
