package cluster

import (
	"testing"
)

// FuzzDecodeCommand feeds arbitrary bytes to the decoder of replicated
// catalog commands (a metadata log entry as a peer sent it) and applies
// whatever decodes to a catalog holding brokers and a topic: neither may
// panic, and a refused command leaves the state as it was.
func FuzzDecodeCommand(f *testing.F) {
	for _, seed := range []string{
		`{"op":"create-topic","topic":{"name":"a","id":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,9],"partitions":2,"replicas":[[1],[2]]}}`,
		`{"op":"set-partitions","name":"t","partitions":3,"replicas":[[2]]}`,
		`{"op":"delete-topic","name":"t"}`,
		`{"op":"deletion-done","id":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1],"broker_id":1}`,
		`{"op":"register-broker","broker":{"id":3,"incarnation":"x","listeners":[]}}`,
		`{"op":"fence-broker","broker_id":1,"broker_epoch":1}`,
		`{"op":"set-acls","acls":[]}`,
		`{"op":"create-topic","topic":{"name":"b","partitions":-1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := newState("fuzz")
		st.register(&Broker{ID: 1})
		st.register(&Broker{ID: 2})
		var id TopicID
		id[15] = 1
		t0 := &Topic{Name: "t", ID: id, Partitions: 2, Replicas: [][]int32{{1}, {2}}}
		st.byName[t0.Name], st.byID[t0.ID] = t0, t0
		c := &Catalog{st: st}
		before, err := c.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		out := c.Apply(1, data).(applied)
		if out.err != nil {
			after, err := c.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if string(after) != string(before) {
				t.Fatalf("a refused command changed the catalog:\n%s", after)
			}
			return
		}
		if _, err := c.Snapshot(); err != nil {
			t.Fatalf("snapshot after %q: %v", data, err)
		}
	})
}
