package broker

// DescribeShareGroupOffsets (key 90), versions 0-1 (KIP-932).
//
// Per group, the SPSO of each share partition (StartOffset, -1 when the
// group has no state for it) and (v1) the lag: records between SPSO and
// the high watermark not yet acknowledged or archived. Topics null lists
// every partition the group has state for. DESCRIBE on the group (else
// GROUP_AUTHORIZATION_FAILED) and on each topic.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(90, 0, 1, (*Broker).handleDescribeShareGroupOffsets) }

func (b *Broker) handleDescribeShareGroupOffsets(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeShareGroupOffsetsRequest)
	deny := b.topicDenied(r, acl.OpDescribe)
	out := req.ResponseKind().(*kmsg.DescribeShareGroupOffsetsResponse)
	for _, g := range req.Groups {
		if b.groupDenied(r, acl.OpDescribe, g.GroupID) {
			rg := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
			rg.GroupID = g.GroupID
			rg.ErrorCode = kerr.GroupAuthorizationFailed.Code
			out.Groups = append(out.Groups, rg)
			continue
		}
		one := *req
		one.Groups = []kmsg.DescribeShareGroupOffsetsRequestGroup{g}
		out.Groups = append(out.Groups, b.coords().share.DescribeOffsets(&one, deny).Groups...)
	}
	return immediate(out)
}
