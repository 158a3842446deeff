package broker

// ApiVersions (key 18), versions 0-4.
//
// Lists every registered API with the exact version range it serves. A
// request at a version above 4 never reaches here: the server answers it
// with a v0 response carrying UNSUPPORTED_VERSION and the same list, which
// is how clients negotiate down. v3+ client software name/version are
// accepted without validation.
//
// One deliberate exception to "never advertise a version it does not
// serve": Produce is listed from version 0, though versions 0-2 are not
// served (such a request closes the connection, as on Kafka 4). librdkafka
// up to 2.11.0 decides whether the broker supports gzip, snappy and lz4 by
// asking if any Produce version in [0, 0] is listed, and otherwise sends
// every batch uncompressed; Apache Kafka 4 lists Produce from 0 for the same
// reason (KAFKA-18659). Clients pick the highest common version, so none
// sends v0-2 because of it.

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
		if k == 0 {
			ak.MinVersion = 0 // see above: librdkafka compression, KAFKA-18659
		}
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
	b.txnFeatures(resp, r.Header.APIVersion)
	return immediate(resp)
}
