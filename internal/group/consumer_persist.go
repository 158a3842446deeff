package group

// Durable KIP-848 membership.
//
// A consumer group's whole membership state — group and target epochs, the
// assignor, and per member its subscription, epochs, reconciliation state,
// assigned, revoking and target partitions and when each was assigned — is
// restated in one record whenever a step changed it, and the heartbeat
// answer that reports the change waits until the record is durable. A
// restarted broker therefore knows every member's epoch and partitions:
// members carry on heartbeating, and a partition is never handed to a
// second member while its owner (unknown to a fresh coordinator) still
// processes it. Session and revocation deadlines restart from the load.
//
// The record is this broker's own (key version 1002, JSON value): Kafka's
// equivalent is a family of records this coordinator does not model one to
// one. A group whose members are all gone is written as a tombstone, so a
// restart never brings members back and the name may switch protocol.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

const keyConsumerGroup = 1002

// consumerState is the persisted form of a consumerGroup.
type consumerState struct {
	Epoch       int32                     `json:"epoch"`
	TargetEpoch int32                     `json:"target_epoch"`
	Assignor    string                    `json:"assignor"`
	MetaHash    uint64                    `json:"meta_hash"`
	Members     []persistedConsumerMember `json:"members"`
}

type persistedConsumerMember struct {
	ID                 string            `json:"id"`
	InstanceID         *string           `json:"instance_id,omitempty"`
	RackID             *string           `json:"rack_id,omitempty"`
	ClientID           string            `json:"client_id"`
	Host               string            `json:"host"`
	RebalanceTimeoutMs int64             `json:"rebalance_timeout_ms"`
	Topics             []string          `json:"topics,omitempty"`
	Regex              string            `json:"regex,omitempty"`
	Assignor           string            `json:"assignor,omitempty"`
	Epoch              int32             `json:"epoch"`
	PrevEpoch          int32             `json:"prev_epoch"`
	State              cstate            `json:"state"`
	Assigned           []persistedTopic  `json:"assigned,omitempty"`
	Revoking           []persistedTopic  `json:"revoking,omitempty"`
	Target             []persistedTopic  `json:"target,omitempty"`
	AssignEpochs       []persistedEpochs `json:"assign_epochs,omitempty"`
	Left               bool              `json:"left,omitempty"`
}

type persistedTopic struct {
	ID         [16]byte `json:"id"`
	Partitions []int32  `json:"partitions"`
}

type persistedEpochs struct {
	ID     [16]byte   `json:"id"`
	Epochs [][2]int32 `json:"epochs"` // partition, epoch
}

func fromAssignment(a assignment) []persistedTopic {
	var out []persistedTopic
	for _, id := range a.ids() {
		ps := slices.Clone(a[id])
		slices.Sort(ps)
		out = append(out, persistedTopic{ID: id, Partitions: ps})
	}
	return out
}

// toAssignmentMap rebuilds an assignment: sorted, without duplicates, in
// O(n log n) however the record lists them.
func toAssignmentMap(ts []persistedTopic) assignment {
	a := assignment{}
	for _, t := range ts {
		a[t.ID] = append(a[t.ID], t.Partitions...)
	}
	for id, ps := range a {
		slices.Sort(ps)
		if ps = slices.Compact(ps); len(ps) == 0 {
			delete(a, id)
		} else {
			a[id] = ps
		}
	}
	return a
}

// encodeConsumerGroup renders g's KIP-848 state deterministically (members
// by id, partitions sorted), so equal states encode to equal bytes; nil if
// nobody is in the group.
func encodeConsumerGroup(g *group) []byte {
	cg := g.cg
	if cg == nil || len(cg.members) == 0 {
		return nil
	}
	st := consumerState{Epoch: cg.epoch, TargetEpoch: cg.targetEpoch, Assignor: cg.assignor, MetaHash: cg.metaHash}
	for _, id := range slices.Sorted(maps.Keys(cg.members)) {
		cm := cg.members[id]
		pm := persistedConsumerMember{
			ID: cm.id, InstanceID: cm.instanceID, RackID: cm.rackID, ClientID: cm.clientID, Host: cm.host,
			RebalanceTimeoutMs: cm.rebalanceTimeout.Milliseconds(), Topics: cm.topics, Regex: cm.regex, Assignor: cm.assignor,
			Epoch: cm.epoch, PrevEpoch: cm.prevEpoch, State: cm.state,
			Assigned: fromAssignment(cm.assigned), Revoking: fromAssignment(cm.revoking), Target: fromAssignment(cm.target),
			Left: cm.left,
		}
		tids := make([][16]byte, 0, len(cm.assignEpochs))
		for tid := range cm.assignEpochs {
			tids = append(tids, tid)
		}
		sort.Slice(tids, func(i, j int) bool { return bytes.Compare(tids[i][:], tids[j][:]) < 0 })
		for _, tid := range tids {
			pe := persistedEpochs{ID: tid}
			for p, e := range cm.assignEpochs[tid] {
				pe.Epochs = append(pe.Epochs, [2]int32{p, e})
			}
			if len(pe.Epochs) == 0 {
				continue
			}
			sort.Slice(pe.Epochs, func(i, j int) bool { return pe.Epochs[i][0] < pe.Epochs[j][0] })
			pm.AssignEpochs = append(pm.AssignEpochs, pe)
		}
		st.Members = append(st.Members, pm)
	}
	b, err := json.Marshal(st)
	if err != nil {
		panic(fmt.Sprintf("group: encoding consumer group %s: %v", g.name, err))
	}
	return b
}

// persistConsumerGroup writes g's KIP-848 state if it changed since it was
// last written; replies wait for it (or go at once if nothing changed).
func (m *Machine) persistConsumerGroup(g *group, replies ...Reply) {
	enc := encodeConsumerGroup(g)
	if bytes.Equal(enc, g.cmeta) {
		m.persist(nil, replies...)
		return
	}
	g.cmeta = enc
	m.persist([]record{{kind: recConsumerGroup, group: g.name, cstate: enc, delete: enc == nil}}, replies...)
}

// loadConsumerGroup rebuilds a KIP-848 group from a replayed record.
func (m *Machine) loadConsumerGroup(r *record) error {
	g := m.groups[r.group]
	if r.delete {
		if g != nil && g.kind == kindConsumer {
			g.kind, g.cg, g.cmeta = kindNone, nil, nil
			if g.state != stateDead {
				g.setState(stateEmpty, m.now)
			}
			m.maybeDropGroup(g)
		}
		return nil
	}
	var st consumerState
	if err := json.Unmarshal(r.cstate, &st); err != nil {
		return fmt.Errorf("%w: consumer group %s: %v", ErrBadRecord, r.group, err)
	}
	if g == nil {
		g = m.groupOrNew(r.group)
	}
	m.clearClassicMembers(g)
	g.meta = nil
	g.kind, g.cg, g.cmeta = kindConsumer, newCgroup(), r.cstate
	g.protocolType, g.protocolName, g.leader = "consumer", "", ""
	cg := g.cg
	cg.epoch, cg.targetEpoch, cg.assignor, cg.metaHash = st.Epoch, st.TargetEpoch, st.Assignor, st.MetaHash
	for _, pm := range st.Members {
		if pm.ID == "" || cg.members[pm.ID] != nil {
			continue
		}
		cm := &consumerMember{
			id: pm.ID, instanceID: pm.InstanceID, rackID: pm.RackID, clientID: pm.ClientID, host: pm.Host,
			rebalanceTimeout: time.Duration(pm.RebalanceTimeoutMs) * time.Millisecond,
			topics:           pm.Topics, regex: pm.Regex, assignor: pm.Assignor,
			epoch: pm.Epoch, prevEpoch: pm.PrevEpoch, state: pm.State,
			assigned: toAssignmentMap(pm.Assigned), revoking: toAssignmentMap(pm.Revoking), target: toAssignmentMap(pm.Target),
			assignEpochs: map[[16]byte]map[int32]int32{}, left: pm.Left,
		}
		if cm.rebalanceTimeout <= 0 {
			cm.rebalanceTimeout = m.cfg.ConsumerSessionTimeout
		}
		if cm.regex != "" {
			if re, err := compileSubscriptionRegex(cm.regex); err == nil {
				cm.re = re
			}
		}
		for _, pe := range pm.AssignEpochs {
			for _, e := range pe.Epochs {
				if cm.assignEpochs[pe.ID] == nil {
					cm.assignEpochs[pe.ID] = map[int32]int32{}
				}
				cm.assignEpochs[pe.ID][e[0]] = e[1]
			}
		}
		cg.members[cm.id] = cm
		if cm.instanceID != nil {
			cg.static[*cm.instanceID] = cm.id
		}
		for _, a := range []assignment{cm.assigned, cm.revoking} {
			for id, ps := range a {
				for _, p := range ps {
					if cg.owner(id, p) == "" {
						cg.setOwner(id, p, cm.id)
					}
				}
			}
		}
		cm.sessionTimer = m.schedule(m.now.Add(m.cfg.ConsumerSessionTimeout), tCSession, g.name, cm.id)
		if len(cm.revoking) > 0 {
			cm.revokeTimer = m.schedule(m.now.Add(cm.rebalanceTimeout), tCRevoke, g.name, cm.id)
		}
	}
	m.updateConsumerState(g)
	return nil
}

// consumerGroupKey is the record key of a group's KIP-848 state.
func consumerGroupKey(group string) []byte {
	return appendString(binary.BigEndian.AppendUint16(nil, keyConsumerGroup), group)
}
