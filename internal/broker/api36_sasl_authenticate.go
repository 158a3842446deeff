package broker

// SaslAuthenticate (key 36), versions 0-2.
//
// On SASL_PLAINTEXT and SASL_SSL listeners the server's authentication
// (internal/server/auth.go) runs the exchange: PLAIN, SCRAM-SHA-256 and
// SCRAM-SHA-512, SessionLifetimeMs (v1+) from connections.max.reauth.ms.
// What reaches this handler came on a listener without SASL: answered
// ILLEGAL_SASL_STATE, as Kafka does.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(36, 0, 2, (*Broker).handleSaslAuthenticate) }

func (b *Broker) handleSaslAuthenticate(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.SASLAuthenticateRequest)
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	resp.ErrorCode = kerr.IllegalSaslState.Code
	resp.ErrorMessage = kmsg.StringPtr("SaslAuthenticate on a listener without SASL")
	return immediate(resp)
}
