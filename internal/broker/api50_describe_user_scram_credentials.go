package broker

// DescribeUserScramCredentials (key 50), version 0 (KIP-554).
//
// Lists users' SCRAM mechanisms and iteration counts (never salts or
// keys). No users named (null or empty): every user with a credential. A
// name given twice is DUPLICATE_RESOURCE, an unknown one
// RESOURCE_NOT_FOUND, per user, as in Kafka. Authorization (DESCRIBE on
// CLUSTER) is the authorizer's.

import (
	"context"
	"slices"

	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(50, 0, 0, (*Broker).handleDescribeUserScramCredentials) }

func (b *Broker) handleDescribeUserScramCredentials(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeUserSCRAMCredentialsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeUserSCRAMCredentialsResponse)
	stored := b.catalog.ScramCredentials()
	var names []string
	count := map[string]int{}
	if len(req.Users) == 0 {
		for u := range stored {
			names = append(names, u)
		}
		slices.Sort(names)
	} else {
		for _, u := range req.Users {
			if count[u.Name]++; count[u.Name] == 1 {
				names = append(names, u.Name)
			}
		}
	}
	for _, name := range names {
		res := kmsg.NewDescribeUserSCRAMCredentialsResponseResult()
		res.User = name
		switch mechs, ok := stored[name]; {
		case count[name] > 1:
			res.ErrorCode = kerr.DuplicateResource.Code
			res.ErrorMessage = kmsg.StringPtr("Cannot describe SCRAM credentials for the same user twice in a single request")
		case !ok:
			res.ErrorCode = kerr.ResourceNotFound.Code
			res.ErrorMessage = kmsg.StringPtr("Attempt to describe a user credential that does not exist")
		default:
			for _, mech := range []string{security.MechScramSHA256, security.MechScramSHA512} {
				if c, ok := mechs[mech]; ok {
					info := kmsg.NewDescribeUserSCRAMCredentialsResponseResultCredentialInfo()
					info.Mechanism, _ = security.ScramMechanism(mech)
					info.Iterations = int32(c.Iterations)
					res.CredentialInfos = append(res.CredentialInfos, info)
				}
			}
		}
		resp.Results = append(resp.Results, res)
	}
	return immediate(resp)
}
