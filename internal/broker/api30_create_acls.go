package broker

// CreateAcls (key 30), versions 1-3 (v0, without pattern types, is gone
// from Kafka 4 too).
//
// Stores ACL bindings (internal/acl) in the catalog, durably, before the
// answer; a binding already stored is not stored twice. Each creation
// is checked on its own: a resource type, pattern type (LITERAL or
// PREFIXED), operation or permission Kafka would refuse, a principal
// that is not User:name, a host that is neither * nor an IP, the cluster
// named other than "kafka-cluster" are INVALID_REQUEST with a message.
// Needs ALTER on CLUSTER (CLUSTER_AUTHORIZATION_FAILED for every
// creation). Without an authorizer (authorizer.class.name empty) every
// creation is SECURITY_DISABLED and nothing is stored, as in Kafka. At
// most MaxACLs bindings are stored (INVALID_REQUEST beyond).

import (
	"context"
	"fmt"
	"slices"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// MaxACLs bounds the stored ACL bindings: every change rewrites the
// catalog, and every authorization scans them.
const MaxACLs = 10000

func init() { register(30, 1, 3, (*Broker).handleCreateACLs) }

func (b *Broker) handleCreateACLs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.CreateACLsRequest)
	resp := req.ResponseKind().(*kmsg.CreateACLsResponse)
	var refused bool
	resp.Results, refused = aclEntryResults(b, r, len(req.Creations), kmsg.NewCreateACLsResponseResult,
		func(res *kmsg.CreateACLsResponseResult, code int16, msg *string) {
			res.ErrorCode, res.ErrorMessage = code, msg
		})
	if refused {
		return immediate(resp)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	stored := b.catalog.ACLs()
	next := slices.Clone(stored)
	var added []int
	for i, c := range req.Creations {
		bd := acl.Binding{ResourceType: acl.ResourceType(c.ResourceType), ResourceName: c.ResourceName,
			PatternType: acl.PatternType(c.ResourcePatternType), Principal: c.Principal, Host: c.Host,
			Operation: acl.Operation(c.Operation), Permission: acl.Permission(c.PermissionType)}
		if err := bd.Validate(); err != nil {
			resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = kerr.InvalidRequest.Code, kmsg.StringPtr(err.Error())
			continue
		}
		if slices.Contains(next, bd) {
			continue
		}
		if len(next) >= MaxACLs {
			resp.Results[i].ErrorCode = kerr.InvalidRequest.Code
			resp.Results[i].ErrorMessage = kmsg.StringPtr(fmt.Sprintf("this broker stores at most %d ACLs", MaxACLs))
			continue
		}
		next = append(next, bd)
		added = append(added, i)
	}
	if len(added) == 0 {
		return immediate(resp)
	}
	if err := b.catalog.SetACLs(next); err != nil {
		b.log.Error("storing ACLs", "err", err)
		for _, i := range added {
			resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = errorCode(err), errMsg(err)
		}
		return immediate(resp)
	}
	for _, bd := range next[len(stored):] {
		b.log.Info("ACL created", "by", principalOf(r), "acl", bd.String())
	}
	return immediate(resp)
}

// principalOf names r's principal for logs.
func principalOf(r *server.Request) string {
	if r.Conn == nil {
		return "broker"
	}
	return "User:" + r.Conn.User()
}
