package broker

// AlterClientQuotas (key 49), versions 0-1 (KIP-546).
//
// Sets and removes client quotas (producer_byte_rate, consumer_byte_rate,
// request_percentage; controller_mutation_rate is stored but has no effect
// here) on user, client-id and (user, client-id) entities, each name or
// <default> (a null name). Each entry is checked and applied as a whole,
// independently of the others, with Kafka's controller's INVALID_REQUEST
// messages: an empty entity, a repeated or unknown entity type, an empty
// name, a repeated key, an unknown key, a value not greater than 0, a
// fractional byte rate; a repeated entity is ignored after its first
// entry. Accepted changes are written to the catalog before the answer and
// apply to the next metered request; validate_only checks and writes
// nothing. Removing a key the entity does not have is not an error.
//
// Gaps: ip entities (connection_creation_rate, KIP-612) are refused; names
// are at most quota.MaxNameLen bytes and at most quota.MaxEntities
// entities are stored (INVALID_REQUEST beyond).

import (
	"context"
	"fmt"
	"maps"

	"github.com/exactly/exactly/internal/quota"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(49, 0, 1, (*Broker).handleAlterClientQuotas) }

func (b *Broker) handleAlterClientQuotas(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AlterClientQuotasRequest)
	resp := req.ResponseKind().(*kmsg.AlterClientQuotasResponse)
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	cur := b.quotas.Quotas()
	next := maps.Clone(cur)
	seen := map[quota.Entity]bool{}
	var applied []int // response entries whose change is in next
	for _, re := range req.Entries {
		se := kmsg.NewAlterClientQuotasResponseEntry()
		cs := make([]quota.Component, len(re.Entity))
		for i, c := range re.Entity {
			ee := kmsg.NewAlterClientQuotasResponseEntryEntity()
			ee.Type, ee.Name = c.Type, c.Name
			se.Entity = append(se.Entity, ee)
			cs[i] = quota.Component{Type: c.Type, Name: c.Name}
		}
		err := alterEntity(next, seen, cs, re.Ops)
		se.ErrorCode, se.ErrorMessage = quotaErrorCode(err), errMsg(err)
		if err == nil {
			applied = append(applied, len(resp.Entries))
		}
		resp.Entries = append(resp.Entries, se)
	}
	if !req.ValidateOnly && len(applied) > 0 {
		if err := b.catalog.SetClientQuotas(storedQuotas(next)); err != nil {
			b.log.Error("storing client quotas", "err", err)
			for _, i := range applied {
				resp.Entries[i].ErrorCode, resp.Entries[i].ErrorMessage = errorCode(err), errMsg(err)
			}
		} else {
			b.quotas.SetQuotas(next)
			b.log.Info("client quotas altered", "entities", len(next))
		}
	}
	return immediate(resp)
}

// alterEntity checks one entry and, if all of it is valid, applies it to
// next (replacing, never modifying, the entity's value map).
func alterEntity(next quota.Set, seen map[quota.Entity]bool, cs []quota.Component, ops []kmsg.AlterClientQuotasRequestEntryOp) error {
	e, err := quota.ParseEntity(cs)
	if err != nil {
		return err
	}
	if seen[e] {
		return &quota.Error{Msg: "Ignoring duplicate entity " + e.String()}
	}
	seen[e] = true
	vals := maps.Clone(next[e])
	if vals == nil {
		vals = map[string]float64{}
	}
	keys := map[string]bool{}
	for _, op := range ops {
		if keys[op.Key] {
			return &quota.Error{Msg: fmt.Sprintf("Duplicate quota key %s not updating quota for this entity %s", op.Key, e)}
		}
		keys[op.Key] = true
		if op.Remove {
			delete(vals, op.Key)
			continue
		}
		if err := quota.ValidateValue(op.Key, op.Value); err != nil {
			return err
		}
		vals[op.Key] = op.Value
	}
	if _, exists := next[e]; !exists && len(vals) > 0 && len(next) >= quota.MaxEntities {
		return &quota.Error{Msg: fmt.Sprintf("this broker stores client quotas for at most %d entities", quota.MaxEntities)}
	}
	if len(vals) == 0 {
		delete(next, e)
	} else {
		next[e] = vals
	}
	return nil
}
