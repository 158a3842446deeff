package broker

// DescribeConfigs (key 32), versions 1-4.
//
// Topic resources list every known topic key with its effective value and
// source (topic override, dynamic broker default, static broker config from
// server.properties/--set, built-in default); broker resources ("" or this
// node's ID) list the broker keys, with ReadOnly for those that cannot
// change at runtime. Synonyms (v1+) and types (v3+) are filled; v3+
// documentation marks keys accepted only for compatibility. Broker logger
// resources are INVALID_REQUEST. Group resources list the share.* group
// configs (source GROUP_CONFIG when set, else the default), from the node
// running the coordinators (forwarded there, see interbroker.go).

import (
	"context"
	"fmt"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(32, 1, 4, (*Broker).handleDescribeConfigs) }

func (b *Broker) handleDescribeConfigs(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeConfigsRequest)
	answer := func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
		fwd := kmsg.NewPtrDescribeConfigsRequest()
		fwd.IncludeSynonyms, fwd.IncludeDocumentation = req.IncludeSynonyms, req.IncludeDocumentation
		var fwdAt []int
		var fwdNames []string
		for i, rr := range req.Resources {
			sr := kmsg.NewDescribeConfigsResponseResource()
			sr.ResourceType = rr.ResourceType
			sr.ResourceName = rr.ResourceName
			err := b.configsAuthorized(r, acl.OpDescribeConfigs, int8(rr.ResourceType), rr.ResourceName)
			switch int8(rr.ResourceType) {
			case resourceTopic:
				if err != nil {
					break
				}
				if t, ok := b.catalog.Topic(rr.ResourceName); ok {
					sr.Configs = b.describeTopicConfigs(t, rr.ConfigNames, req.IncludeSynonyms, req.IncludeDocumentation)
				} else {
					err = fmt.Errorf("%w: %q", cluster.ErrUnknownTopic, rr.ResourceName)
				}
			case resourceBroker:
				if err != nil {
					break
				}
				if err = b.checkBrokerResource(rr.ResourceName); err == nil {
					sr.Configs = b.describeBrokerConfigs(rr.ConfigNames, req.IncludeSynonyms)
				}
			case resourceGroup:
				switch {
				case err != nil:
				case b.groupConfigsElsewhere(r):
					fwd.Resources = append(fwd.Resources, rr)
					fwdAt, fwdNames = append(fwdAt, i), append(fwdNames, rr.ResourceName)
				default:
					sr.Configs, err = b.describeGroupConfigs(rr.ResourceName, rr.ConfigNames)
				}
			default:
				err = &kerrError{kerr.InvalidRequest, fmt.Sprintf("unsupported resource type %d", rr.ResourceType)}
			}
			sr.ErrorCode = errorCode(err)
			sr.ErrorMessage = errMsg(err)
			resp.Resources = append(resp.Resources, sr)
		}
		if len(fwdAt) > 0 {
			for k, a := range b.forwardGroupResources(fwd, fwdNames, func(resp kmsg.Response) (out []peerAnswer) {
				for _, rs := range resp.(*kmsg.DescribeConfigsResponse).Resources {
					out = append(out, peerAnswer{name: rs.ResourceName, code: rs.ErrorCode, msg: rs.ErrorMessage, configs: rs.Configs})
				}
				return out
			}) {
				sr := &resp.Resources[fwdAt[k]]
				sr.Configs = a.configs
				sr.ErrorCode, sr.ErrorMessage = errorCode(a.err), errMsg(a.err)
			}
		}
		return resp
	}
	if b.forwardsGroupConfigs(r, len(req.Resources), func(i int) int8 { return int8(req.Resources[i].ResourceType) }) {
		return server.Reply{Wait: answer}
	}
	return immediate(answer())
}
