package quorum

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// proposalHeader prefixes the data of every normal entry this package
// proposes: the proposing node's id and its request id (both uint64 BE),
// so that the proposer, and only it, can hand Apply's result back.
const proposalHeader = 16

func encodeProposal(node, req uint64, data []byte) []byte {
	b := make([]byte, proposalHeader, proposalHeader+len(data))
	binary.BigEndian.PutUint64(b[0:8], node)
	binary.BigEndian.PutUint64(b[8:16], req)
	return append(b, data...)
}

func decodeProposal(b []byte) (node, req uint64, data []byte, ok bool) {
	if len(b) < proposalHeader {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint64(b[8:16]), b[proposalHeader:], true
}

// confContext is the context of a membership change entry: where the voter
// listens and which storage directory it has (empty for the bootstrap
// voters, whose directory ids are learned at first contact), plus the
// proposer and request ids of the waiting AddVoter/RemoveVoter call.
type confContext struct {
	Addr  string `json:"addr,omitempty"`
	Dir   string `json:"dir,omitempty"`
	Node  uint64 `json:"node,omitempty"`
	ReqID uint64 `json:"req,omitempty"`
}

// member is one voter as the log describes it.
type member struct {
	Addr string `json:"addr"`
	Dir  string `json:"dir,omitempty"`
}

// snapshotMeta is the quorum's own part of a snapshot: the membership with
// addresses and directory ids, which raft's ConfState does not carry.
type snapshotMeta struct {
	Members map[uint64]member `json:"members"`
}

// maxSnapshotMetaBytes bounds the membership part of a snapshot.
const maxSnapshotMetaBytes = 1 << 20

// encodeSnapshotData lays out a snapshot's data: meta length (uint32 BE),
// meta JSON, then the state machine's snapshot.
func encodeSnapshotData(meta snapshotMeta, sm []byte) ([]byte, error) {
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(mb) > maxSnapshotMetaBytes {
		return nil, fmt.Errorf("membership of %d bytes exceeds the %d limit", len(mb), maxSnapshotMetaBytes)
	}
	out := make([]byte, 4, 4+len(mb)+len(sm))
	binary.BigEndian.PutUint32(out, uint32(len(mb)))
	out = append(out, mb...)
	return append(out, sm...), nil
}

func decodeSnapshotData(b []byte) (snapshotMeta, []byte, error) {
	var meta snapshotMeta
	if len(b) < 4 {
		return meta, nil, errors.New("snapshot data too short")
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxSnapshotMetaBytes || int64(n) > int64(len(b)-4) {
		return meta, nil, fmt.Errorf("snapshot membership length %d out of bounds", n)
	}
	if err := json.Unmarshal(b[4:4+n], &meta); err != nil {
		return meta, nil, fmt.Errorf("snapshot membership: %w", err)
	}
	return meta, b[4+n:], nil
}
