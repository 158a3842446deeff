package quorum

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
)

// FuzzWALRecord feeds arbitrary bytes to the WAL record decoder as a
// segment: it must never panic nor allocate past its bound, every record it
// accepts must re-encode to the same bytes, and the torn-tail check must
// terminate.
func FuzzWALRecord(f *testing.F) {
	e, _ := proto.Marshal(testEntry(7, 2))
	hs, _ := proto.Marshal(&pb.HardState{Term: new(uint64(2)), Commit: new(uint64(6))})
	good := appendRecord(appendRecord(nil, recEntry, e), recHardState, hs)
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add(append(bytes.Clone(good), make([]byte, 12)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		size := int64(len(b))
		var off int64
		for off < size {
			typ, payload, n, bad, err := readRecord(r, off, size, 1<<16)
			if err != nil {
				t.Fatalf("read error from a bytes.Reader: %v", err)
			}
			if bad != nil {
				if _, err := isTornTail(r, size, bad); err != nil {
					t.Fatal(err)
				}
				return
			}
			if again := appendRecord(nil, typ, payload); !bytes.Equal(again, b[off:off+n]) {
				t.Fatalf("record at %d does not re-encode to its bytes", off)
			}
			switch typ {
			case recEntry, recSnapshot:
				proto.Unmarshal(payload, &pb.Entry{})
			case recHardState:
				proto.Unmarshal(payload, &pb.HardState{})
			}
			off += n
		}
	})
}

// FuzzTransportFrame feeds arbitrary bytes to a connection's reader: frames
// bounded before allocation, handshakes (a learner's admission request
// included), raft messages, partition group beacons and the checks on them
// must never panic, and an accepted handshake or beacon re-encodes to what
// it decoded from.
func FuzzTransportFrame(f *testing.F) {
	h := hello{ClusterID: "c", NodeID: 2, DirectoryID: DirectoryID{1, 2, 3}}
	m, _ := proto.Marshal(&pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(2)), To: new(uint64(1)),
		Entries: []*pb.Entry{testEntry(3, 1)}})
	stream := appendFrame(appendFrame(appendFrame(nil, frameHello, h.encode()), frameMessage, m), frameKeepalive, nil)
	f.Add(stream)
	f.Add(stream[:7])
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 3})
	f.Add(appendFrame(nil, frameHello, []byte("EXQR\x01")))
	lh := hello{ClusterID: "c", NodeID: 4, DirectoryID: DirectoryID{4}, LearnerAddr: "127.0.0.1:9093"}
	f.Add(appendFrame(nil, frameHello, lh.encode()))
	f.Add(appendFrame(nil, frameHello, []byte("EXQR\x02")))
	f.Add(appendFrame(nil, frameGroupMessage, append([]byte{0, 0, 0, 0, 0, 0, 0, 9}, m...)))
	f.Add(appendFrame(nil, frameGroupBeacon, encodeBeacon([]GroupID{3, 9, 1 << 40})))
	f.Add(appendFrame(nil, frameGroupBeacon, []byte{0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 9}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			kind, payload, err := readFrame(r, 1<<16)
			if err != nil {
				return
			}
			if len(payload) >= 1<<16 {
				t.Fatalf("frame of %d bytes passed a %d bound", len(payload), 1<<16)
			}
			switch kind {
			case frameHello:
				if h, err := decodeHello(payload); err == nil {
					if again, err := decodeHello(h.encode()); err != nil || again != h {
						t.Fatalf("hello %+v does not round-trip: %+v, %v", h, again, err)
					}
					if !bytes.Equal(h.encode(), payload) {
						t.Fatalf("hello %+v re-encodes to other bytes", h)
					}
					if h.LearnerAddr != "" && checkPeerAddr(h.LearnerAddr) != nil {
						t.Fatalf("hello accepted learner address %q", h.LearnerAddr)
					}
				}
			case frameMessage:
				msg := &pb.Message{}
				if proto.Unmarshal(payload, msg) == nil {
					checkInbound(msg, 2, 1)
				}
			case frameGroupMessage:
				if g, msg, err := decodeGroupMessage(payload); err == nil {
					if g == 0 {
						t.Fatalf("group frame for group 0 decoded")
					}
					checkGroupInbound(msg, 2, 1)
				}
			case frameGroupBeacon:
				if quiet, err := decodeBeacon(payload); err == nil {
					if !bytes.Equal(encodeBeacon(quiet), payload) {
						t.Fatalf("beacon %v re-encodes to other bytes", quiet)
					}
					for i := 1; i < len(quiet); i++ {
						if quiet[i] <= quiet[i-1] {
							t.Fatalf("beacon %v accepted out of order", quiet)
						}
					}
				}
			}
		}
	})
}

// FuzzSnapshotDecode covers the decoders of a snapshot file and of the
// snapshot data envelope, both read from disk or a peer.
func FuzzSnapshotDecode(f *testing.F) {
	data, _ := encodeSnapshotData(snapshotMeta{Members: map[uint64]member{1: {Addr: "a:1", Dir: "00"}}}, []byte("sm"))
	file, _ := encodeSnapshotFile(&pb.Snapshot{Data: data, Metadata: &pb.SnapshotMetadata{Index: new(uint64(9)), Term: new(uint64(2))}})
	f.Add(file)
	f.Add(data)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if snap, err := decodeSnapshotFile(b); err == nil {
			decodeSnapshotData(snap.GetData())
		}
		decodeSnapshotData(b)
	})
}
