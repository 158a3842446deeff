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

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(44, 0, 1, (*Broker).handleIncrementalAlterConfigs) }

func (b *Broker) handleIncrementalAlterConfigs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.IncrementalAlterConfigsRequest)
	answer := func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		errs := make([]error, len(req.Resources))
		fwd := kmsg.NewPtrIncrementalAlterConfigsRequest()
		fwd.ValidateOnly = req.ValidateOnly
		var fwdAt []int
		var fwdNames []string
		for i, rr := range req.Resources {
			ops := make([]configOp, 0, len(rr.Configs))
			for _, c := range rr.Configs {
				ops = append(ops, configOp{name: c.Name, op: int8(c.Op), value: c.Value})
			}
			err := b.configsAuthorized(r, acl.OpAlterConfigs, int8(rr.ResourceType), rr.ResourceName)
			switch {
			case err != nil:
			case int8(rr.ResourceType) == resourceGroup && b.groupConfigsElsewhere(r):
				fwd.Resources = append(fwd.Resources, rr)
				fwdAt, fwdNames = append(fwdAt, i), append(fwdNames, rr.ResourceName)
			default:
				err = b.alterConfigs(int8(rr.ResourceType), rr.ResourceName, ops, false, req.ValidateOnly)
			}
			errs[i] = err
		}
		if len(fwdAt) > 0 {
			for k, a := range b.forwardGroupResources(fwd, fwdNames, func(resp kmsg.Response) (out []peerAnswer) {
				for _, rs := range resp.(*kmsg.IncrementalAlterConfigsResponse).Resources {
					out = append(out, peerAnswer{name: rs.ResourceName, code: rs.ErrorCode, msg: rs.ErrorMessage})
				}
				return out
			}) {
				errs[fwdAt[k]] = a.err
			}
		}
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
