package broker

// SaslHandshake (key 17), versions 0-1.
//
// On SASL_PLAINTEXT and SASL_SSL listeners the server's authentication
// (internal/server/auth.go) answers it, before and during re-
// authentication. What reaches this handler came on a listener without
// SASL: answered ILLEGAL_SASL_STATE, as Kafka does.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(17, 0, 1, (*Broker).handleSaslHandshake) }

func (b *Broker) handleSaslHandshake(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.SASLHandshakeRequest)
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.ErrorCode = kerr.IllegalSaslState.Code
	return immediate(resp)
}
