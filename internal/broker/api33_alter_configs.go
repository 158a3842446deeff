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

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(33, 0, 2, (*Broker).handleAlterConfigs) }

func (b *Broker) handleAlterConfigs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AlterConfigsRequest)
	answer := func() kmsg.Response {
		rs := make([]configResource, len(req.Resources))
		for i, rr := range req.Resources {
			rs[i] = configResource{typ: int8(rr.ResourceType), name: rr.ResourceName}
			for _, c := range rr.Configs {
				rs[i].ops = append(rs[i].ops, configOp{name: c.Name, op: 0, value: c.Value})
			}
		}
		errs := b.alterConfigResources(r, rs, true, req.ValidateOnly, func(at []int) []forwardedAnswer {
			fwd := kmsg.NewPtrAlterConfigsRequest()
			fwd.ValidateOnly = req.ValidateOnly
			names := make([]string, len(at))
			for k, i := range at {
				fwd.Resources, names[k] = append(fwd.Resources, req.Resources[i]), req.Resources[i].ResourceName
			}
			return b.forwardGroupResources(fwd, names, func(resp kmsg.Response) (out []peerAnswer) {
				for _, rs := range resp.(*kmsg.AlterConfigsResponse).Resources {
					out = append(out, peerAnswer{name: rs.ResourceName, code: rs.ErrorCode, msg: rs.ErrorMessage})
				}
				return out
			})
		})
		resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
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
