package broker

// Authorization: the one place a request's principal is checked against
// the ACLs (internal/acl decides; the catalog stores the bindings).
// authorizer.class.name empty means no authorization, every request
// allowed, as in Kafka. Handlers whose whole request hinges on one
// resource (a group, a transactional id, the cluster) are gated here
// before they run (gateRequest), so a denied request never reaches the
// coordinator or the catalog and changes nothing; requests naming several
// groups, or topics under an allowed group, lose their denied resources
// before the handler runs (splitDenied, authz_partial.go); handlers that
// answer per topic call b.authorized themselves and skip what is denied.
//
// Every denial counts in kafka_server_authorization_denials_total
// {operation} and logs one audit line (rate limited, as failed
// authentications are); filtering an all-topics Metadata listing or a
// ListGroups answer is not a denial and is silent, as in Kafka.

import (
	"net"
	"time"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// authzConfig is the static authorization setup, read once at start.
type authzConfig struct {
	enabled      bool
	superUsers   map[string]bool
	allowIfNoACL bool
	audit        server.LogLimiter
}

func (b *Broker) startAuthz() {
	name, _ := b.catalog.BrokerConfig("authorizer.class.name")
	su, _ := b.catalog.BrokerConfig("super.users")
	b.authz = &authzConfig{enabled: name != "", superUsers: acl.ParseSuperUsers(su),
		allowIfNoACL: b.brokerBool("allow.everyone.if.no.acl.found")}
	if b.authz.enabled {
		b.log.Info("authorization on", "authorizer", name, "super_users", su, "allow_everyone_if_no_acl_found", b.authz.allowIfNoACL)
	}
}

// authorizer is the decision procedure over the ACLs stored now.
func (b *Broker) authorizer() *acl.Authorizer {
	return &acl.Authorizer{SuperUsers: b.authz.superUsers, AllowIfNoACL: b.authz.allowIfNoACL, ACLs: b.catalog.ACLIndex()}
}

// aclRequest is the question r asks about one resource. A request with
// no connection comes from the broker itself (tests, the embedding API)
// and has no principal; requestAllowed lets it through.
func aclRequest(r *server.Request, op acl.Operation, t acl.ResourceType, name string) acl.Request {
	host, _, err := net.SplitHostPort(r.Conn.RemoteAddr())
	if err != nil {
		host = r.Conn.RemoteAddr()
	}
	return acl.Request{Principal: "User:" + r.Conn.User(), Host: host, Op: op, Type: t, Name: name}
}

// authorized reports whether r's principal may perform op on the named
// resource; a denial is counted and audited.
func (b *Broker) authorized(r *server.Request, op acl.Operation, t acl.ResourceType, name string) bool {
	if b.visible(r, op, t, name) {
		return true
	}
	b.denied(r, op, t, name)
	return false
}

// visible is authorized without the audit: for filtering listings.
func (b *Broker) visible(r *server.Request, op acl.Operation, t acl.ResourceType, name string) bool {
	if !b.authz.enabled || r.Conn == nil {
		return true
	}
	return b.authorizer().Authorize(aclRequest(r, op, t, name))
}

// authorizedOnAny reports whether r's principal may perform op on some
// resource of type t (Kafka's authorizeByResourceType).
func (b *Broker) authorizedOnAny(r *server.Request, op acl.Operation, t acl.ResourceType) bool {
	if !b.authz.enabled || r.Conn == nil {
		return true
	}
	return b.authorizer().AuthorizeAny(aclRequest(r, op, t, ""))
}

// authorizedCluster is authorized on the CLUSTER resource.
func (b *Broker) authorizedCluster(r *server.Request, op acl.Operation) bool {
	return b.authorized(r, op, acl.ResourceCluster, acl.ClusterName)
}

// denied counts and audits one refusal.
func (b *Broker) denied(r *server.Request, op acl.Operation, t acl.ResourceType, name string) {
	b.metrics.authzDenials.WithLabelValues(op.String()).Inc()
	if n, ok := b.authz.audit.Allow(time.Now()); ok {
		b.log.Warn("authorization denied", "principal", "User:"+r.Conn.User(), "remote", r.Conn.RemoteAddr(),
			"listener", r.Conn.Listener(), "api", kmsg.NameForKey(r.Header.APIKey), "operation", op.String(),
			"resource_type", t.String(), "resource", name, "suppressed_since_last", n)
	}
}

// gateRequest checks the APIs whose whole request concerns one group,
// transactional id or the cluster; a non-nil response is the refusal to
// send instead of running the handler.
func (b *Broker) gateRequest(r *server.Request) kmsg.Response {
	if !b.authz.enabled || r.Conn == nil {
		return nil
	}
	groupCode := func(op acl.Operation, g string) kmsg.Response {
		if !b.authorized(r, op, acl.ResourceGroup, g) {
			return group.ErrorResponse(r.Msg, kerr.GroupAuthorizationFailed.Code)
		}
		return nil
	}
	switch req := r.Msg.(type) {
	case *kmsg.JoinGroupRequest:
		return groupCode(acl.OpRead, req.Group)
	case *kmsg.SyncGroupRequest:
		return groupCode(acl.OpRead, req.Group)
	case *kmsg.HeartbeatRequest:
		return groupCode(acl.OpRead, req.Group)
	case *kmsg.LeaveGroupRequest:
		return groupCode(acl.OpRead, req.Group)
	case *kmsg.ConsumerGroupHeartbeatRequest:
		return groupCode(acl.OpRead, req.Group)
	case *kmsg.OffsetCommitRequest: // topics: splitDenied
		return groupCode(acl.OpRead, req.Group)
	case *kmsg.OffsetFetchRequest: // v8+ groups and all topics: splitDenied
		if req.Version < 8 {
			return groupCode(acl.OpDescribe, req.Group)
		}
	case *kmsg.OffsetDeleteRequest: // topics: splitDenied
		return groupCode(acl.OpDelete, req.Group)
	case *kmsg.InitProducerIDRequest:
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ProducerID, resp.ProducerEpoch = -1, -1
		switch {
		case req.TransactionalID != nil:
			if !b.authorized(r, acl.OpWrite, acl.ResourceTransactionalID, *req.TransactionalID) {
				resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
				return resp
			}
		case !b.visible(r, acl.OpIdempotentWrite, acl.ResourceCluster, acl.ClusterName) && !b.authorizedOnAny(r, acl.OpWrite, acl.ResourceTopic):
			b.denied(r, acl.OpIdempotentWrite, acl.ResourceCluster, acl.ClusterName)
			resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
			return resp
		}
	case *kmsg.AddOffsetsToTxnRequest:
		resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
		switch {
		case !b.authorized(r, acl.OpWrite, acl.ResourceTransactionalID, req.TransactionalID):
			resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			return resp
		case !b.authorized(r, acl.OpRead, acl.ResourceGroup, req.Group):
			resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
			return resp
		}
	case *kmsg.EndTxnRequest:
		if !b.authorized(r, acl.OpWrite, acl.ResourceTransactionalID, req.TransactionalID) {
			resp := req.ResponseKind().(*kmsg.EndTxnResponse)
			resp.ProducerID, resp.ProducerEpoch = -1, -1
			resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			return resp
		}
	case *kmsg.TxnOffsetCommitRequest: // topics: splitDenied
		code := int16(0)
		switch {
		case !b.authorized(r, acl.OpWrite, acl.ResourceTransactionalID, req.TransactionalID):
			code = kerr.TransactionalIDAuthorizationFailed.Code
		case !b.authorized(r, acl.OpRead, acl.ResourceGroup, req.Group):
			code = kerr.GroupAuthorizationFailed.Code
		}
		if code != 0 {
			return txnOffsetCommitError(req, code)
		}
	case *kmsg.WriteTxnMarkersRequest:
		// ALTER on the cluster also lets an operator write markers (Kafka's
		// fallback); only the CLUSTER_ACTION denial is audited.
		if !b.visible(r, acl.OpAlter, acl.ResourceCluster, acl.ClusterName) && !b.authorizedCluster(r, acl.OpClusterAction) {
			resp := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
			for _, m := range req.Markers {
				rm := kmsg.NewWriteTxnMarkersResponseMarker()
				rm.ProducerID = m.ProducerID
				for _, t := range m.Topics {
					rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
					rt.Topic = t.Topic
					for _, idx := range t.Partitions {
						rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
						rp.Partition, rp.ErrorCode = idx, kerr.ClusterAuthorizationFailed.Code
						rt.Partitions = append(rt.Partitions, rp)
					}
					rm.Topics = append(rm.Topics, rt)
				}
				resp.Markers = append(resp.Markers, rm)
			}
			return resp
		}
	case *kmsg.DescribeClientQuotasRequest:
		if !b.authorizedCluster(r, acl.OpDescribeConfigs) {
			resp := req.ResponseKind().(*kmsg.DescribeClientQuotasResponse)
			resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
			return resp
		}
	case *kmsg.AlterClientQuotasRequest:
		if !b.authorizedCluster(r, acl.OpAlterConfigs) {
			resp := req.ResponseKind().(*kmsg.AlterClientQuotasResponse)
			for _, e := range req.Entries {
				se := kmsg.NewAlterClientQuotasResponseEntry()
				for _, c := range e.Entity {
					ee := kmsg.NewAlterClientQuotasResponseEntryEntity()
					ee.Type, ee.Name = c.Type, c.Name
					se.Entity = append(se.Entity, ee)
				}
				se.ErrorCode = kerr.ClusterAuthorizationFailed.Code
				resp.Entries = append(resp.Entries, se)
			}
			return resp
		}
	case *kmsg.DescribeUserSCRAMCredentialsRequest:
		if !b.authorizedCluster(r, acl.OpDescribe) {
			resp := req.ResponseKind().(*kmsg.DescribeUserSCRAMCredentialsResponse)
			resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
			return resp
		}
	case *kmsg.AlterUserSCRAMCredentialsRequest:
		if !b.authorizedCluster(r, acl.OpAlter) {
			resp := req.ResponseKind().(*kmsg.AlterUserSCRAMCredentialsResponse)
			seen := map[string]bool{}
			add := func(user string) {
				if seen[user] {
					return
				}
				seen[user] = true
				rr := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
				rr.User, rr.ErrorCode = user, kerr.ClusterAuthorizationFailed.Code
				resp.Results = append(resp.Results, rr)
			}
			for _, d := range req.Deletions {
				add(d.Name)
			}
			for _, u := range req.Upsertions {
				add(u.Name)
			}
			return resp
		}
	}
	return nil
}

// filterListedGroups leaves out of a ListGroups answer the groups r's
// principal may not DESCRIBE, unless it may DESCRIBE the cluster.
func (b *Broker) filterListedGroups(r *server.Request, reply server.Reply) server.Reply {
	if !b.authz.enabled || r.Conn == nil || reply.Wait == nil || b.visible(r, acl.OpDescribe, acl.ResourceCluster, acl.ClusterName) {
		return reply
	}
	wait := reply.Wait
	reply.Wait = func() kmsg.Response {
		resp := wait()
		if lg, ok := resp.(*kmsg.ListGroupsResponse); ok {
			kept := lg.Groups[:0]
			for _, g := range lg.Groups {
				if b.visible(r, acl.OpDescribe, acl.ResourceGroup, g.Group) {
					kept = append(kept, g)
				}
			}
			lg.Groups = kept
		}
		return resp
	}
	return reply
}

// errTopicAuthorization is TOPIC_AUTHORIZATION_FAILED through error
// plumbing.
var errTopicAuthorization = &kerrError{kerr.TopicAuthorizationFailed, "not authorized to access the topic"}

// errClusterAuthorization is CLUSTER_AUTHORIZATION_FAILED through error
// plumbing.
var errClusterAuthorization = &kerrError{kerr.ClusterAuthorizationFailed, "not authorized on the cluster"}

// configsAuthorized checks op (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a
// config resource: the topic, or the cluster for a broker resource.
func (b *Broker) configsAuthorized(r *server.Request, op acl.Operation, resourceType int8, name string) error {
	switch resourceType {
	case resourceTopic:
		if !b.authorized(r, op, acl.ResourceTopic, name) {
			return errTopicAuthorization
		}
	case resourceBroker:
		if !b.authorizedCluster(r, op) {
			return errClusterAuthorization
		}
	case resourceGroup:
		// A node forwarding a GROUP config request has authorized its
		// user (interbroker.go); nodes hold CLUSTER_ACTION, as for markers.
		if !b.authorized(r, op, acl.ResourceGroup, name) && !(b.fromPeer(r) && b.authorizedCluster(r, acl.OpClusterAction)) {
			return &kerrError{kerr.GroupAuthorizationFailed, "not authorized on the group"}
		}
	}
	return nil
}

// aclAPIRefusal is what an ACL API (DescribeAcls, CreateAcls,
// DeleteAcls) answers before it looks at the ACLs: SECURITY_DISABLED
// without an authorizer (as Kafka: nothing would check them), and
// CLUSTER_AUTHORIZATION_FAILED without op on the cluster; code 0 to go on.
func (b *Broker) aclAPIRefusal(r *server.Request, op acl.Operation) (code int16, msg *string) {
	switch {
	case !b.authz.enabled:
		return kerr.SecurityDisabled.Code, kmsg.StringPtr("no authorizer is configured on the broker (authorizer.class.name)")
	case !b.authorizedCluster(r, op):
		return kerr.ClusterAuthorizationFailed.Code, nil
	}
	return 0, nil
}

// aclEntryResults makes the n per-entry results of CreateAcls or
// DeleteAcls; refused reports that every entry carries the refusal
// (aclAPIRefusal for ALTER on the cluster) and nothing may be changed.
func aclEntryResults[T any](b *Broker, r *server.Request, n int, newResult func() T, setError func(*T, int16, *string)) (results []T, refused bool) {
	results = make([]T, n)
	for i := range results {
		results[i] = newResult()
	}
	code, msg := b.aclAPIRefusal(r, acl.OpAlter)
	if code == 0 {
		return results, false
	}
	for i := range results {
		setError(&results[i], code, msg)
	}
	return results, true
}
