package broker

// DescribeCluster (key 60), versions 0-1.
//
// The brokers Metadata lists (this one, or every unfenced broker of the
// cluster) and the controller (the metadata quorum's leader). v1
// EndpointType 2 (controller) is answered like 1 (broker): every node
// serves both.

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
	resp.ControllerID = b.controllerID()
	resp.EndpointType = req.EndpointType
	resp.ClusterAuthorizedOperations = authorizedOpsUnknown
	for _, mb := range b.metadataBrokers(r) {
		br := kmsg.NewDescribeClusterResponseBroker()
		br.NodeID, br.Host, br.Port, br.Rack = mb.NodeID, mb.Host, mb.Port, mb.Rack
		resp.Brokers = append(resp.Brokers, br)
	}
	return immediate(resp)
}
