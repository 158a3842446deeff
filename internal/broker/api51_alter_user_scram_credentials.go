package broker

// AlterUserScramCredentials (key 51), version 0 (KIP-554).
//
// Upserts carry the salted password (the client ran PBKDF2); the broker
// derives and stores the stored and server keys, never the password.
// Per user, as in Kafka: an empty name or iterations outside 4096..16384
// (or an empty salt or salted password) is UNACCEPTABLE_CREDENTIAL, an
// unknown mechanism UNSUPPORTED_SASL_MECHANISM, a (user, mechanism) pair
// named twice DUPLICATE_RESOURCE, deleting a credential that does not
// exist RESOURCE_NOT_FOUND; a user with any error has none of its
// alterations applied. All accepted alterations are stored in one catalog
// write. Beyond MaxScramUsers users or MaxScramUserLen bytes of name:
// UNACCEPTABLE_CREDENTIAL. Authorization (ALTER on CLUSTER) is the
// authorizer's.

import (
	"context"
	"fmt"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(51, 0, 0, (*Broker).handleAlterUserScramCredentials) }

// scramAlteration is one deletion (cred nil) or upsertion of a request.
type scramAlteration struct {
	user, mech string
	cred       *cluster.ScramCredential
}

func (b *Broker) handleAlterUserScramCredentials(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AlterUserSCRAMCredentialsRequest)
	resp := req.ResponseKind().(*kmsg.AlterUserSCRAMCredentialsResponse)
	type verdict struct {
		code int16
		msg  string
	}
	var order []string
	verdicts := map[string]*verdict{}
	fail := func(user string, code int16, msg string) {
		if v := verdicts[user]; v.code == 0 {
			v.code, v.msg = code, msg
		}
	}
	var alts []scramAlteration
	pairs := map[[2]string]int{}
	note := func(user string, mech int8) (string, bool) {
		if verdicts[user] == nil {
			verdicts[user] = &verdict{}
			order = append(order, user)
		}
		if user == "" {
			fail(user, kerr.UnacceptableCredential.Code, "Username must not be empty")
			return "", false
		}
		if len(user) > MaxScramUserLen {
			fail(user, kerr.UnacceptableCredential.Code, fmt.Sprintf("Username is %d bytes; this broker accepts at most %d", len(user), MaxScramUserLen))
			return "", false
		}
		name, ok := security.ScramMechanismName(mech)
		if !ok {
			fail(user, kerr.UnsupportedSaslMechanism.Code, "Unknown SCRAM mechanism")
			return "", false
		}
		if pairs[[2]string{user, name}]++; pairs[[2]string{user, name}] > 1 {
			fail(user, kerr.DuplicateResource.Code, "A user credential cannot be altered twice in the same request")
			return "", false
		}
		return name, true
	}
	for _, d := range req.Deletions {
		if mech, ok := note(d.Name, d.Mechanism); ok {
			alts = append(alts, scramAlteration{user: d.Name, mech: mech})
		}
	}
	for _, u := range req.Upsertions {
		mech, ok := note(u.Name, u.Mechanism)
		if !ok {
			continue
		}
		switch {
		case u.Iterations < security.MinScramIterations:
			fail(u.Name, kerr.UnacceptableCredential.Code, "Too few iterations")
			continue
		case u.Iterations > security.MaxScramIterations:
			fail(u.Name, kerr.UnacceptableCredential.Code, "Too many iterations")
			continue
		}
		c, err := security.CredentialFromSaltedPassword(mech, u.Salt, u.SaltedPassword, int(u.Iterations))
		if err != nil {
			fail(u.Name, kerr.UnacceptableCredential.Code, err.Error())
			continue
		}
		sc := toStored(c)
		alts = append(alts, scramAlteration{user: u.Name, mech: mech, cred: &sc})
	}

	b.adminMu.Lock()
	err := b.alterScramLocked(func(m map[string]map[string]cluster.ScramCredential) error {
		for _, a := range alts {
			if verdicts[a.user].code != 0 {
				continue
			}
			if a.cred == nil {
				if _, ok := m[a.user][a.mech]; !ok {
					fail(a.user, kerr.ResourceNotFound.Code, "Attempt to delete a user credential that does not exist")
				}
				continue
			}
			if m[a.user] == nil && len(m) >= MaxScramUsers {
				fail(a.user, kerr.UnacceptableCredential.Code, fmt.Sprintf("this broker stores SCRAM credentials for at most %d users", MaxScramUsers))
			}
		}
		for _, a := range alts {
			if verdicts[a.user].code != 0 {
				continue
			}
			if a.cred == nil {
				delete(m[a.user], a.mech)
				continue
			}
			if m[a.user] == nil {
				m[a.user] = map[string]cluster.ScramCredential{}
			}
			m[a.user][a.mech] = *a.cred
		}
		return nil
	})
	b.adminMu.Unlock()
	for _, user := range order {
		res := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
		res.User = user
		v := verdicts[user]
		switch {
		case v.code != 0:
			res.ErrorCode, res.ErrorMessage = v.code, kmsg.StringPtr(v.msg)
		case err != nil:
			res.ErrorCode, res.ErrorMessage = kerr.KafkaStorageError.Code, kmsg.StringPtr(err.Error())
		}
		resp.Results = append(resp.Results, res)
	}
	return immediate(resp)
}
