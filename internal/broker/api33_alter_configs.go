package broker

// AlterConfigs (key 33), versions 0-2.
//
// Replaces the whole override set of a topic, the dynamic broker
// defaults (resource "" or this node's ID) or a group's configs, durably
// (GROUP resources forwarded as in IncrementalAlterConfigs). Every key and value is
// validated first (INVALID_CONFIG naming the key); nothing changes on error.
// Retention and segment changes apply to open logs immediately.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(33, 0, 2, (*Broker).handleAlterConfigs) }

func (b *Broker) handleAlterConfigs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AlterConfigsRequest)
	answer := func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
		errs := make([]error, len(req.Resources))
		fwd := kmsg.NewPtrAlterConfigsRequest()
		fwd.ValidateOnly = req.ValidateOnly
		var fwdAt []int
		var fwdNames []string
		for i, rr := range req.Resources {
			ops := make([]configOp, 0, len(rr.Configs))
			for _, c := range rr.Configs {
				ops = append(ops, configOp{name: c.Name, op: 0, value: c.Value})
			}
			err := b.configsAuthorized(r, acl.OpAlterConfigs, int8(rr.ResourceType), rr.ResourceName)
			switch {
			case err != nil:
			case int8(rr.ResourceType) == resourceGroup && b.groupConfigsElsewhere(r):
				fwd.Resources = append(fwd.Resources, rr)
				fwdAt, fwdNames = append(fwdAt, i), append(fwdNames, rr.ResourceName)
			default:
				err = b.alterConfigs(int8(rr.ResourceType), rr.ResourceName, ops, true, req.ValidateOnly)
			}
			errs[i] = err
		}
		if len(fwdAt) > 0 {
			for k, a := range b.forwardGroupResources(fwd, fwdNames, func(resp kmsg.Response) (out []peerAnswer) {
				for _, rs := range resp.(*kmsg.AlterConfigsResponse).Resources {
					out = append(out, peerAnswer{name: rs.ResourceName, code: rs.ErrorCode, msg: rs.ErrorMessage})
				}
				return out
			}) {
				errs[fwdAt[k]] = a.err
			}
		}
		for i, rr := range req.Resources {
			sr := kmsg.NewAlterConfigsResponseResource()
			sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
			sr.ErrorCode, sr.ErrorMessage = errorCode(errs[i]), errMsg(errs[i])
			resp.Resources = append(resp.Resources, sr)
		}
		return resp
	}
	if b.forwardsGroupConfigs(r, len(req.Resources), func(i int) int8 { return int8(req.Resources[i].ResourceType) }) {
		return server.Reply{Wait: answer}
	}
	return immediate(answer())
}
