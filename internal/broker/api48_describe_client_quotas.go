package broker

// DescribeClientQuotas (key 48), versions 0-1 (KIP-546).
//
// Lists the stored client quotas whose entity matches the filter: each
// component names a type (user, client-id, ip) and matches a name exactly,
// the <default> entity, or any entity of the type; strict excludes entities
// with other types. Filters are checked as Kafka does: a repeated type, a
// match string where none belongs (or none where one does) and ip combined
// with user or client-id are INVALID_REQUEST; an unknown type is
// UNSUPPORTED_VERSION. No IP quotas are ever stored, so ip filters match
// nothing.

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/exactly/exactly/internal/quota"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(48, 0, 1, (*Broker).handleDescribeClientQuotas) }

func (b *Broker) handleDescribeClientQuotas(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeClientQuotasRequest)
	resp := req.ResponseKind().(*kmsg.DescribeClientQuotasResponse)
	cs := make([]quota.FilterComponent, len(req.Components))
	for i, c := range req.Components {
		cs[i] = quota.FilterComponent{Type: c.EntityType, MatchType: int8(c.MatchType), Match: c.Match}
	}
	f, err := quota.ParseFilter(cs, req.Strict)
	if err != nil {
		resp.ErrorCode, resp.ErrorMessage = quotaErrorCode(err), errMsg(err)
		return immediate(resp)
	}
	set := b.quotas.Quotas()
	for _, e := range sortedEntities(set) {
		if !f.Matches(e) {
			continue
		}
		entry := kmsg.NewDescribeClientQuotasResponseEntry()
		for _, c := range e.Components() {
			ee := kmsg.NewDescribeClientQuotasResponseEntryEntity()
			ee.Type, ee.Name = c.Type, c.Name
			entry.Entity = append(entry.Entity, ee)
		}
		for _, k := range sortedKeys(set[e]) {
			v := kmsg.NewDescribeClientQuotasResponseEntryValue()
			v.Key, v.Value = k, set[e][k]
			entry.Values = append(entry.Values, v)
		}
		resp.Entries = append(resp.Entries, entry)
	}
	return immediate(resp)
}

// quotaErrorCode maps a refused quota request to Kafka's code.
func quotaErrorCode(err error) int16 {
	var qe *quota.Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &qe) && qe.Unsupported:
		return kerr.UnsupportedVersion.Code
	case errors.As(err, &qe):
		return kerr.InvalidRequest.Code
	default:
		return errorCode(err)
	}
}

// sortedEntities lists a quota set's entities in a stable order: by user,
// then client id (absent < default < named).
func sortedEntities(set quota.Set) []quota.Entity {
	out := make([]quota.Entity, 0, len(set))
	for e := range set {
		out = append(out, e)
	}
	part := func(a, b quota.Part) int { return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name)) }
	slices.SortFunc(out, func(a, b quota.Entity) int {
		return cmp.Or(part(a.User, b.User), part(a.ClientID, b.ClientID))
	})
	return out
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
