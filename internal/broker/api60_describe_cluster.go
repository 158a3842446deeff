package broker

// DescribeCluster (key 60), versions 0-1.
//
// One broker, which is also the controller. v1 EndpointType 2 (controller)
// is answered like 1 (broker): the same node serves both.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(60, 0, 1, (*Broker).handleDescribeCluster) }

func (b *Broker) handleDescribeCluster(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeClusterRequest)
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.ClusterID = b.ClusterID()
	resp.ControllerID = b.cfg.NodeID
	resp.EndpointType = req.EndpointType
	resp.ClusterAuthorizedOperations = authorizedOpsUnknown
	br := kmsg.NewDescribeClusterResponseBroker()
	br.NodeID = b.cfg.NodeID
	br.Host, br.Port = b.advertised(r)
	resp.Brokers = []kmsg.DescribeClusterResponseBroker{br}
	return immediate(resp)
}
