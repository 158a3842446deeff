package broker

// Client quotas (KIP-13, KIP-55, KIP-124, KIP-219): the configuration lives
// in the catalog and in b.quotas (internal/quota); this file meters every
// handled request and throttles the client.
//
// A connection's user is server.Conn.User (the anonymous user until a
// listener authenticates it).
// Produce request bytes are metered against producer_byte_rate, Fetch
// response record bytes against consumer_byte_rate, and the time Handle
// spends on any request against request_percentage (percent of one thread;
// time a deferred reply waits for fsync or a long poll is not handling).
// A throttled client is answered at once with throttle_time_ms set, and its
// connection is muted for that long (server.Conn.Mute): it is not read from,
// so a client that ignores the throttle gains nothing. A throttled fetch is
// answered with no data and its bytes are not counted (as Kafka does).

import (
	"fmt"
	"math"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/quota"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// startQuotas builds the quota manager from quota.window.* and the quotas
// stored in the catalog.
func (b *Broker) startQuotas() error {
	w := quota.Window{
		Samples: int(b.brokerInt("quota.window.num")),
		Size:    time.Duration(b.brokerInt("quota.window.size.seconds")) * time.Second,
	}
	b.quotas = quota.NewManager(w)
	set, err := quotaSet(b.catalog.ClientQuotas())
	if err != nil {
		return fmt.Errorf("client quotas in the catalog: %w", err)
	}
	b.quotas.SetQuotas(set)
	return nil
}

// quotaSet converts stored quotas to the manager's form.
func quotaSet(stored []cluster.ClientQuota) (quota.Set, error) {
	set := quota.Set{}
	for _, q := range stored {
		e, err := quota.ParseEntity(quotaComponents(q.Entity))
		if err != nil {
			return nil, err
		}
		set[e] = q.Values
	}
	return set, nil
}

// storedQuotas converts the manager's form to the catalog's, in a stable
// order so the catalog file does not churn.
func storedQuotas(set quota.Set) []cluster.ClientQuota {
	out := make([]cluster.ClientQuota, 0, len(set))
	for _, e := range sortedEntities(set) {
		var parts []cluster.QuotaEntityPart
		for _, c := range e.Components() {
			parts = append(parts, cluster.QuotaEntityPart{Type: c.Type, Name: c.Name})
		}
		out = append(out, cluster.ClientQuota{Entity: parts, Values: set[e]})
	}
	return out
}

func quotaComponents(parts []cluster.QuotaEntityPart) []quota.Component {
	cs := make([]quota.Component, len(parts))
	for i, p := range parts {
		cs[i] = quota.Component{Type: p.Type, Name: p.Name}
	}
	return cs
}

// metered is what one request has been charged so far: its client and the
// largest throttle any of its quotas asks for.
type metered struct {
	user, client string
	throttle     time.Duration
	kind         quota.Type
}

// charge records value of type t and keeps the larger throttle.
func (b *Broker) charge(m *metered, t quota.Type, value float64, now time.Time) {
	if d := b.quotas.Record(t, m.user, m.client, value, now); d > m.throttle {
		m.throttle, m.kind = d, t
	}
}

// finishReply meters a handled request and arranges for its response to
// carry the throttle, and for the connection to be muted, once the
// response exists (deferred replies: when the writer builds them).
func (b *Broker) finishReply(r *server.Request, reply server.Reply, handled time.Duration) server.Reply {
	m := &metered{user: requestUser(r), client: r.Header.ClientID}
	active := len(b.quotas.Quotas()) > 0
	if active {
		now := time.Now()
		b.charge(m, quota.Request, quota.PercentOf(handled), now)
		if r.Header.APIKey == 0 {
			b.charge(m, quota.Produce, float64(r.ReceivedBytes), now)
		}
	}
	if m.throttle > 0 && r.Conn != nil {
		// Known now: stop reading at once rather than after a deferred
		// reply's fsync, while a pipelining client sends more.
		r.Conn.Mute(m.throttle)
	}
	if !active && r.Header.APIKey != 1 {
		return reply
	}
	finish := func(resp kmsg.Response) kmsg.Response {
		if f, ok := resp.(*fetchResponse); ok {
			b.finishFetch(f, m, active)
		}
		b.throttle(r, resp, m)
		return resp
	}
	switch {
	case reply.Wait != nil:
		wait := reply.Wait
		reply.Wait = func() kmsg.Response { return finish(wait()) }
	case reply.Response != nil:
		reply.Response = finish(reply.Response)
	default: // acks=0: no response, but the connection is still muted
		b.throttle(r, nil, m)
	}
	return reply
}

// finishFetch charges a fetch's record bytes to consumer_byte_rate. A
// throttled fetch (by any quota) returns no data and its bytes are taken
// back, as in Kafka: the client asks again after the throttle. Bytes out
// are counted only for data actually sent.
func (b *Broker) finishFetch(resp *fetchResponse, m *metered, active bool) {
	size := resp.recordBytes()
	if active && size > 0 {
		now := time.Now()
		b.charge(m, quota.Fetch, float64(size), now)
		if m.throttle > 0 {
			b.quotas.Unrecord(quota.Fetch, m.user, m.client, float64(size), now)
			resp.dropData()
			return
		}
	}
	b.countBytesOut(resp)
}

// throttle sets throttle_time_ms on resp and mutes the connection.
func (b *Broker) throttle(r *server.Request, resp kmsg.Response, m *metered) {
	if m.throttle <= 0 {
		return
	}
	if t, ok := resp.(kmsg.SetThrottleResponse); ok {
		t.SetThrottle(int32(min(m.throttle.Milliseconds(), math.MaxInt32)))
	}
	if r.Conn != nil {
		r.Conn.Mute(m.throttle)
	}
	b.metrics.throttled(m.kind, m.throttle)
}

// fetchQuotaCap bounds a fetch's MaxBytes by what its consumer_byte_rate
// allows in one window (Kafka's getMaxValueInQuotaWindow), so one response
// does not exceed the quota many times over.
func (b *Broker) fetchQuotaCap(r *server.Request, req *kmsg.FetchRequest) {
	limit, ok := b.quotas.Limit(quota.Fetch, requestUser(r), r.Header.ClientID)
	if !ok {
		return
	}
	w := b.quotas.Window()
	max := limit * float64(w.Samples-1) * w.Size.Seconds()
	if max < math.MaxInt32 && float64(req.MaxBytes) > max {
		req.MaxBytes = int32(max)
	}
}

// requestUser is the user a request's quotas apply to.
func requestUser(r *server.Request) string {
	if r.Conn == nil {
		return quota.Anonymous
	}
	return r.Conn.User()
}
