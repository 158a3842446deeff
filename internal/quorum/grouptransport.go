package quorum

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Partition groups share the metadata quorum's connections: one transport
// per node pair, whatever the number of groups. A group's message travels
// in a frameGroupMessage: the group id (uint64 BE), then the protobuf
// raftpb.Message.

const (
	// groupSendQueueLen bounds the group messages waiting for one peer;
	// raft retransmits, so a full queue drops and reports the peer
	// unreachable to the group.
	groupSendQueueLen = 4096
	groupIDBytes      = 8
)

// GroupID names a partition's raft group on every node; 0 is reserved
// (the metadata quorum's messages carry none).
type GroupID uint64

// groupMessage is one outbound message of a partition group, or (m nil)
// a beacon.
type groupMessage struct {
	group  GroupID
	m      *pb.Message
	beacon []byte
}

// groupRouter hands partition groups' traffic to their drivers; it must
// not block.
type groupRouter interface {
	deliverGroup(g GroupID, m *pb.Message)
	reportGroup(g GroupID, r transportReport)
	beacon(from uint64, quiet []GroupID)
}

// sendBeacon queues a beacon for every peer; a full queue skips it (the
// next tick sends another).
func (t *transport) sendBeacon(payload []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.peers {
		select {
		case p.gqueue <- groupMessage{beacon: payload}:
		default:
		}
	}
}

// receiveBeacon decodes and records a peer's beacon; false closes the
// connection.
func (t *transport) receiveBeacon(from uint64, payload []byte) bool {
	quiet, err := decodeBeacon(payload)
	if err != nil {
		t.log.Warn("refused partition group beacon, closing", "peer", from, "err", err)
		return false
	}
	if t.groups != nil {
		t.groups.beacon(from, quiet)
	}
	return true
}

// sendGroup queues m of group g for its peer without blocking; a full
// queue or an unknown peer drops it and reports the peer unreachable to
// the group (and a snapshot lost).
func (t *transport) sendGroup(g GroupID, m *pb.Message) {
	t.mu.Lock()
	p := t.peers[m.GetTo()]
	t.mu.Unlock()
	if p != nil {
		select {
		case p.gqueue <- groupMessage{group: g, m: m}:
			return
		default:
		}
	}
	t.groupLost(m.GetTo(), groupMessage{group: g, m: m})
}

// groupLost tells a group that its message to peer `to` was not sent.
func (t *transport) groupLost(to uint64, gm groupMessage) {
	if t.groups == nil || gm.m == nil {
		return // a beacon: the next tick sends another
	}
	t.groups.reportGroup(gm.group, transportReport{group: gm.group, to: to, unreachable: true})
	if gm.m.GetType() == pb.MsgSnap {
		t.groups.reportGroup(gm.group, transportReport{group: gm.group, to: to, snapshot: true})
	}
}

// receiveGroup decodes and routes one group frame from peer `from`; false
// means the frame was malformed or not the peer's to send, and the
// connection must close.
func (t *transport) receiveGroup(from uint64, payload []byte) bool {
	g, m, err := decodeGroupMessage(payload)
	if err == nil {
		err = checkGroupInbound(m, from, t.self.NodeID)
	}
	if err != nil {
		t.log.Warn("refused partition group message, closing", "peer", from, "err", err)
		return false
	}
	if t.groups != nil {
		t.groups.deliverGroup(g, m)
	}
	return true
}

func decodeGroupMessage(payload []byte) (GroupID, *pb.Message, error) {
	if len(payload) < groupIDBytes {
		return 0, nil, fmt.Errorf("group frame of %d bytes", len(payload))
	}
	g := GroupID(binary.BigEndian.Uint64(payload))
	if g == 0 {
		return 0, nil, fmt.Errorf("group frame for group 0")
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(payload[groupIDBytes:], m); err != nil {
		return 0, nil, err
	}
	return g, m, nil
}

// checkGroupInbound applies checkInbound's rules with the partition
// groups' entry bound.
func checkGroupInbound(m *pb.Message, from, to uint64) error {
	if m.GetFrom() != from || m.GetTo() != to {
		return fmt.Errorf("message from %d to %d on the connection of %d to %d", m.GetFrom(), m.GetTo(), from, to)
	}
	if err := checkMessageType(m); err != nil {
		return err
	}
	for _, e := range m.GetEntries() {
		if len(e.GetData()) > maxGroupEntryBytes {
			return fmt.Errorf("entry %d of %d bytes exceeds the %d limit", e.GetIndex(), len(e.GetData()), maxGroupEntryBytes)
		}
	}
	return nil
}

func (t *transport) writeGroupMessage(w *bufio.Writer, c net.Conn, gm groupMessage, buf *[]byte) bool {
	if gm.m == nil {
		*buf = appendFrame((*buf)[:0], frameGroupBeacon, gm.beacon)
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(*buf)
		return err == nil
	}
	isSnap := gm.m.GetType() == pb.MsgSnap
	b := binary.BigEndian.AppendUint64(nil, uint64(gm.group))
	b, err := proto.MarshalOptions{}.MarshalAppend(b, gm.m)
	if err == nil && len(b)+1 > maxFrameBytes {
		err = fmt.Errorf("message of %d bytes exceeds the frame limit", len(b))
	}
	if err != nil {
		t.log.Error("partition group message not sent", "group", gm.group, "to", gm.m.GetTo(), "err", err)
		if isSnap && t.groups != nil {
			t.groups.reportGroup(gm.group, transportReport{group: gm.group, to: gm.m.GetTo(), snapshot: true})
		}
		return true
	}
	*buf = appendFrame((*buf)[:0], frameGroupMessage, b)
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err = w.Write(*buf)
	if err == nil && isSnap {
		err = w.Flush()
	}
	if isSnap && t.groups != nil {
		t.groups.reportGroup(gm.group, transportReport{group: gm.group, to: gm.m.GetTo(), snapshot: true, ok: err == nil})
	}
	return err == nil
}
