package broker

// DeleteAcls (key 31), versions 1-3.
//
// Removes every stored ACL binding each filter selects (the filters of
// DescribeAcls) and answers, per filter, the bindings it removed; the
// catalog is rewritten once, durably, before the answer. An invalid
// filter is INVALID_REQUEST for that filter alone. Needs ALTER on
// CLUSTER (CLUSTER_AUTHORIZATION_FAILED for every filter, nothing
// removed); without an authorizer every filter is SECURITY_DISABLED, as
// in Kafka.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(31, 1, 3, (*Broker).handleDeleteACLs) }

func (b *Broker) handleDeleteACLs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DeleteACLsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteACLsResponse)
	var refused bool
	resp.Results, refused = aclEntryResults(b, r, len(req.Filters), kmsg.NewDeleteACLsResponseResult,
		func(res *kmsg.DeleteACLsResponseResult, code int16, msg *string) {
			res.ErrorCode, res.ErrorMessage = code, msg
		})
	if refused {
		return immediate(resp)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	cur := b.catalog.ACLs()
	gone := make([]bool, len(cur))
	removed := 0
	for i, rf := range req.Filters {
		f := acl.Filter{ResourceType: acl.ResourceType(rf.ResourceType), ResourceName: rf.ResourceName,
			PatternType: acl.PatternType(rf.ResourcePatternType), Principal: rf.Principal, Host: rf.Host,
			Operation: acl.Operation(rf.Operation), Permission: acl.Permission(rf.PermissionType)}
		if err := f.Validate(); err != nil {
			resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = kerr.InvalidRequest.Code, kmsg.StringPtr(err.Error())
			continue
		}
		for j, bd := range cur {
			if !f.Matches(bd) {
				continue
			}
			m := kmsg.NewDeleteACLsResponseResultMatchingACL()
			m.ResourceType, m.ResourceName = kmsg.ACLResourceType(bd.ResourceType), bd.ResourceName
			m.ResourcePatternType = kmsg.ACLResourcePatternType(bd.PatternType)
			m.Principal, m.Host = bd.Principal, bd.Host
			m.Operation, m.PermissionType = kmsg.ACLOperation(bd.Operation), kmsg.ACLPermissionType(bd.Permission)
			resp.Results[i].MatchingACLs = append(resp.Results[i].MatchingACLs, m)
			if !gone[j] {
				gone[j] = true
				removed++
			}
		}
	}
	if removed == 0 {
		return immediate(resp)
	}
	next := make([]acl.Binding, 0, len(cur)-removed)
	for j, bd := range cur {
		if !gone[j] {
			next = append(next, bd)
		}
	}
	if err := b.catalog.SetACLs(next); err != nil {
		b.log.Error("storing ACLs", "err", err)
		for i := range resp.Results {
			if resp.Results[i].ErrorCode == 0 {
				resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = errorCode(err), errMsg(err)
				resp.Results[i].MatchingACLs = nil
			}
		}
		return immediate(resp)
	}
	b.log.Info("ACLs deleted", "by", principalOf(r), "count", removed)
	return immediate(resp)
}
