package broker

// ApiVersions (key 18), versions 0-4.
//
// Lists every registered API with the exact version range it serves. A
// request at a version above 4 never reaches here: the server answers it
// with a v0 response carrying UNSUPPORTED_VERSION and the same list, which
// is how clients negotiate down. v3+ client software name/version are
// accepted without validation.

import (
	"context"
	"sort"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(18, 0, 4, (*Broker).handleAPIVersions) }

func (b *Broker) handleAPIVersions(_ context.Context, r *server.Request) server.Reply {
	resp := kmsg.NewPtrApiVersionsResponse()
	keys := make([]int, 0, len(apis))
	for k := range apis {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	for _, k := range keys {
		e := apis[int16(k)]
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = int16(k), e.lo, e.hi
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
	return now(resp)
}
