package broker

// IncrementalAlterConfigs (key 44), versions 0-1.
//
// SET, DELETE, APPEND and SUBTRACT (the last two for list keys only) on a
// topic's overrides or the dynamic broker defaults, validated as a whole
// before anything is written.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(44, 0, 1, (*Broker).handleIncrementalAlterConfigs) }

func (b *Broker) handleIncrementalAlterConfigs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.IncrementalAlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	for _, rr := range req.Resources {
		sr := kmsg.NewIncrementalAlterConfigsResponseResource()
		sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
		ops := make([]configOp, 0, len(rr.Configs))
		for _, c := range rr.Configs {
			ops = append(ops, configOp{name: c.Name, op: int8(c.Op), value: c.Value})
		}
		err := b.configsAuthorized(r, acl.OpAlterConfigs, int8(rr.ResourceType), rr.ResourceName)
		if err == nil {
			err = b.alterConfigs(int8(rr.ResourceType), rr.ResourceName, ops, false, req.ValidateOnly)
		}
		sr.ErrorCode, sr.ErrorMessage = errorCode(err), errMsg(err)
		resp.Resources = append(resp.Resources, sr)
	}
	return immediate(resp)
}
