package broker

// IncrementalAlterConfigs (key 44), versions 0-1.
//
// SET, DELETE, APPEND and SUBTRACT (the last two for list keys only) on a
// topic's overrides, the dynamic broker defaults or a group's configs,
// validated as a whole before anything is written. In a cluster, a node
// that does not run the coordinators forwards GROUP resources to the one
// that does (interbroker.go).

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(44, 0, 1, (*Broker).handleIncrementalAlterConfigs) }

func (b *Broker) handleIncrementalAlterConfigs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.IncrementalAlterConfigsRequest)
	answer := func() kmsg.Response {
		rs := make([]configResource, len(req.Resources))
		for i, rr := range req.Resources {
			rs[i] = configResource{typ: int8(rr.ResourceType), name: rr.ResourceName}
			for _, c := range rr.Configs {
				rs[i].ops = append(rs[i].ops, configOp{name: c.Name, op: int8(c.Op), value: c.Value})
			}
		}
		errs := b.alterConfigResources(r, rs, false, req.ValidateOnly, func(at []int) []forwardedAnswer {
			fwd := kmsg.NewPtrIncrementalAlterConfigsRequest()
			fwd.ValidateOnly = req.ValidateOnly
			names := make([]string, len(at))
			for k, i := range at {
				fwd.Resources, names[k] = append(fwd.Resources, req.Resources[i]), req.Resources[i].ResourceName
			}
			return b.forwardGroupResources(fwd, names, func(resp kmsg.Response) (out []peerAnswer) {
				for _, rs := range resp.(*kmsg.IncrementalAlterConfigsResponse).Resources {
					out = append(out, peerAnswer{name: rs.ResourceName, code: rs.ErrorCode, msg: rs.ErrorMessage})
				}
				return out
			})
		})
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for i, rr := range req.Resources {
			sr := kmsg.NewIncrementalAlterConfigsResponseResource()
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
