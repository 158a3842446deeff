package broker

// DescribeAcls (key 29), versions 1-3.
//
// Lists the stored ACL bindings a filter selects (internal/acl Filter:
// ANY matches every value, a null name/principal/host matches any, MATCH
// selects every binding that applies to the named resource — the name,
// the * wildcard and prefixes of it), grouped by resource pattern. A
// filter Kafka would refuse (unknown type, operation or permission) is
// INVALID_REQUEST. Needs DESCRIBE on CLUSTER (CLUSTER_AUTHORIZATION_FAILED);
// SECURITY_DISABLED without an authorizer, as in Kafka.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(29, 1, 3, (*Broker).handleDescribeACLs) }

func (b *Broker) handleDescribeACLs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeACLsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	if code, msg := b.aclAPIRefusal(r, acl.OpDescribe); code != 0 {
		resp.ErrorCode, resp.ErrorMessage = code, msg
		return immediate(resp)
	}
	f := acl.Filter{ResourceType: acl.ResourceType(req.ResourceType), ResourceName: req.ResourceName,
		PatternType: acl.PatternType(req.ResourcePatternType), Principal: req.Principal, Host: req.Host,
		Operation: acl.Operation(req.Operation), Permission: acl.Permission(req.PermissionType)}
	if err := f.Validate(); err != nil {
		resp.ErrorCode, resp.ErrorMessage = kerr.InvalidRequest.Code, kmsg.StringPtr(err.Error())
		return immediate(resp)
	}
	type pattern struct {
		t    acl.ResourceType
		name string
		pt   acl.PatternType
	}
	index := map[pattern]int{}
	for _, bd := range b.catalog.ACLs() {
		if !f.Matches(bd) {
			continue
		}
		k := pattern{bd.ResourceType, bd.ResourceName, bd.PatternType}
		i, ok := index[k]
		if !ok {
			res := kmsg.NewDescribeACLsResponseResource()
			res.ResourceType, res.ResourceName = kmsg.ACLResourceType(k.t), k.name
			res.ResourcePatternType = kmsg.ACLResourcePatternType(k.pt)
			i = len(resp.Resources)
			index[k] = i
			resp.Resources = append(resp.Resources, res)
		}
		a := kmsg.NewDescribeACLsResponseResourceACL()
		a.Principal, a.Host = bd.Principal, bd.Host
		a.Operation, a.PermissionType = kmsg.ACLOperation(bd.Operation), kmsg.ACLPermissionType(bd.Permission)
		resp.Resources[i].ACLs = append(resp.Resources[i].ACLs, a)
	}
	return immediate(resp)
}
