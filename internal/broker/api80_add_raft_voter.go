package broker

// AddRaftVoter (key 80), versions 0-1, and RemoveRaftVoter (key 81),
// version 0 (KIP-853).
//
// Change the metadata quorum's voters, one at a time: `exactly cluster
// add-voter` / `remove-voter`, or Kafka's kafka-metadata-quorum.sh. A
// node whose disk was wiped must not vote under its old identity (it
// could vote twice in one term): the others refuse its new directory
// until it is removed and added again. AddRaftVoter names the new
// voter's controller listener (the first listener given); the quorum
// dials it to learn its directory id, so the node must be running
// (started with `exactly serve --join`). Both answer once the change is
// applied on this node. The request's cluster id, when given, must be
// this cluster's (INCONSISTENT_CLUSTER_ID); a directory id, when given,
// must be the voter's (INCONSISTENT_VOTER_SET would be Kafka's answer
// for a stale one; here the quorum checks incarnations itself and the
// field is only compared for RemoveRaftVoter). ALTER on the cluster is
// required. A single node answers INVALID_REQUEST.
// Gaps: AckWhenCommitted (v1) is always honoured as true; a second change
// while one is pending fails with REQUEST_TIMED_OUT when raft drops it.

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	register(80, 0, 1, (*Broker).handleAddRaftVoter)
	register(81, 0, 0, (*Broker).handleRemoveRaftVoter)
}

// voterChangeTimeout bounds a membership change without a request
// timeout.
const voterChangeTimeout = 30 * time.Second

// voterChangeCheck is the common refusal of both requests, 0 if none.
func (b *Broker) voterChangeCheck(r *server.Request, clusterID *string) (int16, string) {
	switch {
	case !b.authorizedCluster(r, acl.OpAlter):
		return kerr.ClusterAuthorizationFailed.Code, ""
	case !b.clustered():
		return kerr.InvalidRequest.Code, "this broker is a single node, not a member of a metadata quorum"
	case clusterID != nil && *clusterID != b.ClusterID():
		return kerr.InconsistentClusterID.Code, fmt.Sprintf("this is cluster %s, not %s", b.ClusterID(), *clusterID)
	}
	return 0, ""
}

func (b *Broker) handleAddRaftVoter(ctx context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AddRaftVoterRequest)
	resp := req.ResponseKind().(*kmsg.AddRaftVoterResponse)
	fail := func(code int16, msg string) server.Reply {
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = kmsg.StringPtr(msg)
		}
		return immediate(resp)
	}
	if code, msg := b.voterChangeCheck(r, req.ClusterID); code != 0 {
		return fail(code, msg)
	}
	if req.VoterID < 1 {
		return fail(kerr.InvalidRequest.Code, "voter ids start at 1")
	}
	if len(req.Listeners) == 0 {
		return fail(kerr.InvalidRequest.Code, "the new voter's controller listener is required")
	}
	l := req.Listeners[0]
	addr := net.JoinHostPort(l.Host, strconv.Itoa(int(l.Port)))
	timeout := voterChangeTimeout
	if req.TimeoutMillis > 0 {
		timeout = time.Duration(req.TimeoutMillis) * time.Millisecond
	}
	id := req.VoterID
	return server.Reply{Wait: func() kmsg.Response {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := b.node.quorum.AddVoter(cctx, uint64(id), addr); err != nil {
			resp.ErrorCode = voterChangeError(cctx, err)
			resp.ErrorMessage = kmsg.StringPtr(err.Error())
			return resp
		}
		b.log.Info("added a voter to the metadata quorum", "voter", id, "controller", addr)
		return resp
	}}
}

func (b *Broker) handleRemoveRaftVoter(ctx context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.RemoveRaftVoterRequest)
	resp := req.ResponseKind().(*kmsg.RemoveRaftVoterResponse)
	if code, msg := b.voterChangeCheck(r, req.ClusterID); code != 0 {
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = kmsg.StringPtr(msg)
		}
		return immediate(resp)
	}
	id := req.VoterID
	if req.VoterDirectoryID != ([16]byte{}) {
		for _, v := range b.node.quorum.Status().Voters {
			if int32(v.ID) == id && v.DirectoryID != "" && v.DirectoryID != hex.EncodeToString(req.VoterDirectoryID[:]) {
				resp.ErrorCode = kerr.VoterNotFound.Code
				resp.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("voter %d has directory %s", id, v.DirectoryID))
				return immediate(resp)
			}
		}
	}
	return server.Reply{Wait: func() kmsg.Response {
		cctx, cancel := context.WithTimeout(ctx, voterChangeTimeout)
		defer cancel()
		if err := b.node.quorum.RemoveVoter(cctx, uint64(id)); err != nil {
			resp.ErrorCode = voterChangeError(cctx, err)
			resp.ErrorMessage = kmsg.StringPtr(err.Error())
			return resp
		}
		b.log.Info("removed a voter from the metadata quorum", "voter", id)
		return resp
	}}
}

// voterChangeError maps a failed membership change.
func voterChangeError(ctx context.Context, err error) int16 {
	if ctx.Err() != nil {
		return kerr.RequestTimedOut.Code
	}
	return kerr.UnknownServerError.Code
}
