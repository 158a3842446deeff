package group

// Transcript tests: each testdata/*.txt file (datadriven format, see
// internal/transcript) drives one Machine through requests, clock moves and
// persistence acknowledgements, and every command's expected output is what
// the machine did. Regenerate the outputs with
//
//	go test ./internal/group -run TestTranscripts -rewrite
//
// and review the diff: a transcript is a readable specification of what the
// coordinator answers, step by step.
//
// Each command's output starts with what the machine was handed, prefixed
// by the clock (time since the transcript's start) and, for a request, the
// client and the request's token #N; then, indented, what the machine asked
// for: "< #N" replies (to this request or earlier ones), "persist seq=S"
// with the records to append, and "wake" (Output.Wake).
//
// Setup:    config [initial-rebalance-delay=D]   (first command only)
//           topic name=T [partitions=N] [delete]
// Classic:  join, sync, heartbeat, leave
// Offsets:  commit, fetch, offset-delete
// Admin:    describe, list-groups, delete-groups
// KIP-848:  consumer-heartbeat, consumer-describe
// Txn:      validate, stage, complete, pending-txn-offsets
// Time:     tick, expire, drop-deleted-topics; at=/advance= on any command
// Durable:  persisted (everything handed out so far became durable)
//
// Lists are (a, b); a value in double quotes is a Go string literal.
// Partitions are topic/partition, offsets topic/partition=offset. Requests
// take client= (the sending client id), group=, member=, instance= (absent:
// null), gen= or epoch=, and version= where versions behave differently.
// A join's protocols are (name:metadata, ...); metadata consumer(t u) is
// a real client's subscription to topics t and u.

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/exactly/exactly/internal/transcript"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestTranscripts runs every testdata/*.txt transcript.
func TestTranscripts(t *testing.T) {
	transcript.Run(t, "testdata", func(t *testing.T) func(*testing.T, *datadriven.TestData) string {
		h := newHarness(t, testConfig(), nil)
		return h.run
	})
}

// staticTopics is a fixed topic catalog for transcripts.
type staticTopics struct{ byName map[string]TopicInfo }

func newTopics(spec map[string]int32) *staticTopics {
	st := &staticTopics{byName: map[string]TopicInfo{}}
	for name, n := range spec {
		st.add(name, n)
	}
	return st
}

func (s *staticTopics) add(name string, partitions int32) {
	var id [16]byte
	copy(id[:], name)
	id[15] = 0xee // never all-zero
	s.byName[name] = TopicInfo{Name: name, ID: id, Partitions: partitions}
}

func (s *staticTopics) TopicByName(name string) (TopicInfo, bool) {
	t, ok := s.byName[name]
	return t, ok
}

func (s *staticTopics) TopicByID(id [16]byte) (TopicInfo, bool) {
	for _, t := range s.byName {
		if t.ID == id {
			return t, true
		}
	}
	return TopicInfo{}, false
}

func (s *staticTopics) Topics() []TopicInfo {
	var out []TopicInfo
	for _, t := range s.byName {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// harness drives a Machine and writes what it did as text: transcript
// commands return that text, Go tests use the same steps and inspect the
// replies.
type harness struct {
	t      *testing.T
	m      *Machine
	topics *staticTopics
	clock  *transcript.Clock
	tok    Token
	buf    bytes.Buffer // output of the current command
	seqs   []uint64     // persisted but not yet acknowledged
	// replies by token, for tests that inspect responses
	replies map[Token]Reply
	// persisted records in order, for replay tests
	log []KV
}

// start is where every harness clock starts.
var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, cfg Config, topics map[string]int32) *harness {
	h := &harness{t: t, topics: newTopics(topics), clock: transcript.NewClock(start), replies: map[Token]Reply{}}
	h.m = NewMachine(withCounterIDs(cfg), h.topics)
	return h
}

// withCounterIDs makes member ids predictable: id1, id2, ...
func withCounterIDs(cfg Config) Config {
	n := 0
	cfg.NewID = func() string { n++; return fmt.Sprintf("id%d", n) }
	return cfg
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.InitialRebalanceDelay = 0
	return cfg
}

func (h *harness) now() time.Time { return h.clock.Now() }

func (h *harness) elapsed(t time.Time) string {
	return "+" + h.clock.Since(t).String()
}

// record writes an Output.
func (h *harness) record(out Output) {
	for _, r := range out.Replies {
		h.replies[r.Token] = r
		if r.Response != nil {
			fmt.Fprintf(&h.buf, "  < #%d %s\n", r.Token, render(r.Response, h.topics))
		} else {
			fmt.Fprintf(&h.buf, "  < #%d err=%v\n", r.Token, r.Err)
		}
	}
	if out.Persist != nil {
		var kinds []string
		for _, kv := range out.Persist.Records {
			r, err := decodeRecord(kv.Key, kv.Value)
			if err != nil {
				h.t.Fatalf("machine wrote an undecodable record: %v", err)
			}
			kinds = append(kinds, renderRecord(r))
		}
		h.log = append(h.log, out.Persist.Records...)
		fmt.Fprintf(&h.buf, "  persist seq=%d %s\n", out.Persist.Seq, strings.Join(kinds, " "))
		h.seqs = append(h.seqs, out.Persist.Seq)
	}
	if !out.Wake.IsZero() {
		fmt.Fprintf(&h.buf, "  wake %s\n", h.elapsed(out.Wake))
	}
}

// send hands a request to the machine from client and returns its token.
func (h *harness) send(client string, req kmsg.Request) Token {
	h.tok++
	fmt.Fprintf(&h.buf, "%s %s #%d %s\n", h.elapsed(h.now()), client, h.tok, render(req, h.topics))
	h.record(h.m.Handle(h.now(), h.tok, Client{ID: client, Host: "/10.0.0.1"}, req))
	return h.tok
}

// tick fires the timers due now.
func (h *harness) tick() {
	fmt.Fprintf(&h.buf, "%s tick\n", h.elapsed(h.now()))
	h.record(h.m.Tick(h.now()))
}

// advance moves the clock and fires due timers.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	h.tick()
}

// expire runs offset expiry at the current time.
func (h *harness) expire() {
	fmt.Fprintf(&h.buf, "%s ExpireOffsets\n", h.elapsed(h.now()))
	h.record(h.m.ExpireOffsets(h.now()))
}

// dropDeleted drops offsets of topics that no longer exist.
func (h *harness) dropDeleted() {
	fmt.Fprintf(&h.buf, "%s DropDeletedTopics\n", h.elapsed(h.now()))
	h.record(h.m.DropDeletedTopics(h.now()))
}

// durable acknowledges every persisted record; false if there was none.
func (h *harness) durable() bool {
	if len(h.seqs) == 0 {
		return false
	}
	seq := h.seqs[len(h.seqs)-1]
	h.seqs = nil
	fmt.Fprintf(&h.buf, "%s durable seq<=%d\n", h.elapsed(h.now()), seq)
	h.record(h.m.Persisted(h.now(), seq))
	return true
}

func (h *harness) stage(pid int64, epoch int16, group string, offsets ...TxnOffset) Token {
	h.tok++
	fmt.Fprintf(&h.buf, "%s txn #%d StageTxnOffsets pid=%d epoch=%d group=%s %v\n", h.elapsed(h.now()), h.tok, pid, epoch, group, offsets)
	h.record(h.m.StageTxnOffsets(h.now(), h.tok, pid, epoch, group, offsets))
	return h.tok
}

func (h *harness) complete(pid int64, group string, commit bool) Token {
	h.tok++
	fmt.Fprintf(&h.buf, "%s txn #%d CompleteTxn pid=%d group=%s commit=%v\n", h.elapsed(h.now()), h.tok, pid, group, commit)
	h.record(h.m.CompleteTxn(h.now(), h.tok, pid, group, commit))
	return h.tok
}

func (h *harness) validate(group, member string, gen int32, instance *string) error {
	err := h.m.ValidateTxnCommit(group, member, gen, instance)
	fmt.Fprintf(&h.buf, "%s txn ValidateTxnCommit group=%s member=%q gen=%d instance=%s -> %v\n", h.elapsed(h.now()), group, member, gen, strp(instance), err)
	return err
}

// reply returns the reply for tok, failing if there is none yet.
func (h *harness) reply(tok Token) kmsg.Response {
	h.t.Helper()
	r, ok := h.replies[tok]
	if !ok {
		h.t.Fatalf("no reply for #%d yet", tok)
	}
	return r.Response
}

func (h *harness) pending(tok Token) bool {
	_, ok := h.replies[tok]
	return !ok
}

// join runs the KIP-394 two-step join and returns the member id and the
// parked join's token.
func (h *harness) join(client, group string, protocols ...string) (string, Token) {
	h.t.Helper()
	tok := h.send(client, joinReq(group, "", nil, protocols...))
	r, code := joinCode(h, tok)
	wantCode(h.t, "first join", code, kerr.MemberIDRequired)
	return r.MemberID, h.send(client, joinReq(group, r.MemberID, nil, protocols...))
}

func joinCode(h *harness, tok Token) (*kmsg.JoinGroupResponse, int16) {
	h.t.Helper()
	r := h.reply(tok).(*kmsg.JoinGroupResponse)
	return r, r.ErrorCode
}

func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	code := int16(0)
	if want != nil {
		code = want.Code
	}
	if got != code {
		t.Fatalf("%s: got %s, want %s", what, errName(got), errName(code))
	}
}

// cgh returns a heartbeat's answer, making what it waits on durable first
// (a heartbeat that changed the group is answered after its record is).
func cgh(h *harness, tok Token) *kmsg.ConsumerGroupHeartbeatResponse {
	h.t.Helper()
	if h.pending(tok) {
		h.durable()
	}
	return h.reply(tok).(*kmsg.ConsumerGroupHeartbeatResponse)
}

// assigned is the partitions of topic in a heartbeat's assignment.
func assigned(h *harness, r *kmsg.ConsumerGroupHeartbeatResponse, topic string) []int32 {
	if r.Assignment == nil {
		return nil
	}
	for _, t := range r.Assignment.Topics {
		if topicName(t.TopicID, h.topics) == topic {
			return t.Partitions
		}
	}
	return []int32{}
}

func commit848(group, member string, epoch int32, offsets ...string) *kmsg.OffsetCommitRequest {
	return commitReq(group, member, nil, epoch, offsets...)
}

// run runs one transcript command and returns what the machine did.
func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	h.t = t
	h.buf.Reset()
	h.clock.Move(t, d)
	a := args{t: t, d: d}
	switch d.Cmd {
	case "config":
		a.known("initial-rebalance-delay")
		if h.tok > 0 || len(h.log) > 0 || h.clock.Since(h.now()) > 0 {
			d.Fatalf(t, "config must come first")
		}
		cfg := testConfig()
		d.MaybeScanArgs(t, "initial-rebalance-delay", &cfg.InitialRebalanceDelay)
		h.m = NewMachine(withCounterIDs(cfg), h.topics)
		fmt.Fprintf(&h.buf, "initial rebalance delay %s\n", cfg.InitialRebalanceDelay)
	case "topic":
		a.known("name", "partitions", "delete")
		name := a.str("name", "")
		if d.HasArg("delete") {
			delete(h.topics.byName, name)
		} else {
			h.topics.add(name, int32(a.int("partitions", 1)))
		}
		var ts []string
		for _, ti := range h.topics.Topics() {
			ts = append(ts, fmt.Sprintf("%s[%d]", ti.Name, ti.Partitions))
		}
		fmt.Fprintf(&h.buf, "topics %s\n", strings.Join(ts, " "))

	case "join":
		a.known("client", "group", "member", "instance", "protocols", "version", "session", "rebalance", "type")
		var protocols []string
		for _, p := range a.list("protocols") {
			name, meta, _ := strings.Cut(p, ":")
			if topics, ok := strings.CutPrefix(meta, "consumer("); ok {
				// A real client's subscription metadata.
				meta = string(consumerMeta(strings.Fields(strings.TrimSuffix(topics, ")"))...))
			}
			protocols = append(protocols, name+":"+meta)
		}
		req := joinReq(a.str("group", ""), a.str("member", ""), a.instance(), protocols...)
		req.Version = int16(a.int("version", int64(req.Version)))
		req.SessionTimeoutMillis = int32(a.int("session", int64(req.SessionTimeoutMillis)))
		req.RebalanceTimeoutMillis = int32(a.int("rebalance", int64(req.RebalanceTimeoutMillis)))
		req.ProtocolType = a.str("type", req.ProtocolType)
		h.send(a.client(), req)
	case "sync":
		a.known("client", "group", "member", "instance", "gen", "assign", "version")
		req := syncReq(a.str("group", ""), a.str("member", ""), a.instance(), int32(a.int("gen", -1)), a.list("assign")...)
		req.Version = int16(a.int("version", int64(req.Version)))
		h.send(a.client(), req)
	case "heartbeat":
		a.known("client", "group", "member", "instance", "gen")
		h.send(a.client(), hbReq(a.str("group", ""), a.str("member", ""), a.instance(), int32(a.int("gen", -1))))
	case "leave":
		// v3+ leaves a list of members (id/instance, either may be
		// empty); older versions one member=.
		a.known("client", "group", "member", "members", "version")
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Version = int16(a.int("version", 5))
		req.Group = a.str("group", "")
		req.MemberID = a.str("member", "")
		for _, m := range a.list("members") {
			id, inst, ok := strings.Cut(m, "/")
			lm := kmsg.LeaveGroupRequestMember{MemberID: id}
			if ok {
				lm.InstanceID = &inst
			}
			req.Members = append(req.Members, lm)
		}
		h.send(a.client(), req)

	case "commit":
		a.known("client", "group", "member", "instance", "gen", "offsets", "version")
		req := commitReq(a.str("group", ""), a.str("member", ""), a.instance(), int32(a.int("gen", -1)), a.list("offsets")...)
		req.Version = int16(a.int("version", int64(req.Version)))
		h.send(a.client(), req)
	case "fetch":
		// Without parts=, every partition the group has.
		a.known("client", "group", "parts", "stable", "member", "epoch", "version")
		var topics map[string][]int32
		if d.HasArg("parts") {
			topics = map[string][]int32{}
			for _, tp := range a.partitions("parts") {
				topics[tp.topic] = append(topics[tp.topic], tp.partition)
			}
		}
		var req *kmsg.OffsetFetchRequest
		if v := int16(a.int("version", 9)); v < 8 {
			req = kmsg.NewPtrOffsetFetchRequest()
			req.Version, req.Group = v, a.str("group", "")
			for _, name := range slices.Sorted(maps.Keys(topics)) {
				req.Topics = append(req.Topics, kmsg.OffsetFetchRequestTopic{Topic: name, Partitions: topics[name]})
			}
		} else {
			req = fetchReq(a.str("group", ""), d.HasArg("stable"), topics)
			req.Version = v
			if d.HasArg("member") {
				req.Groups[0].MemberID = kmsg.StringPtr(a.str("member", ""))
			}
			req.Groups[0].MemberEpoch = int32(a.int("epoch", int64(req.Groups[0].MemberEpoch)))
		}
		h.send(a.client(), req)
	case "offset-delete":
		a.known("client", "group", "parts")
		req := kmsg.NewPtrOffsetDeleteRequest()
		req.Group = a.str("group", "")
		for _, tp := range a.partitions("parts") {
			i := slices.IndexFunc(req.Topics, func(t kmsg.OffsetDeleteRequestTopic) bool { return t.Topic == tp.topic })
			if i < 0 {
				req.Topics = append(req.Topics, kmsg.OffsetDeleteRequestTopic{Topic: tp.topic})
				i = len(req.Topics) - 1
			}
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, kmsg.OffsetDeleteRequestTopicPartition{Partition: tp.partition})
		}
		h.send(a.client(), req)

	case "describe":
		a.known("client", "groups", "version")
		h.send(a.client(), &kmsg.DescribeGroupsRequest{Version: int16(a.int("version", 5)), Groups: a.list("groups")})
	case "list-groups":
		a.known("client", "states", "types", "version")
		h.send(a.client(), &kmsg.ListGroupsRequest{Version: int16(a.int("version", 5)), StatesFilter: a.list("states"), TypesFilter: a.list("types")})
	case "delete-groups":
		a.known("client", "groups", "version")
		h.send(a.client(), &kmsg.DeleteGroupsRequest{Version: int16(a.int("version", 2)), Groups: a.list("groups")})

	case "consumer-heartbeat":
		// subs= and owned= absent are null (a keepalive); () is empty.
		a.known("client", "group", "member", "epoch", "instance", "subs", "regex", "assignor", "owned")
		var subs []string
		if d.HasArg("subs") {
			subs = append([]string{}, a.list("subs")...)
		}
		var owned map[string][]int32
		if d.HasArg("owned") {
			owned = map[string][]int32{}
			for _, tp := range a.partitions("owned") {
				owned[tp.topic] = append(owned[tp.topic], tp.partition)
			}
		}
		req := cghReq(a.str("group", ""), a.str("member", ""), int32(a.int("epoch", 0)), subs, owned, h.topics)
		req.InstanceID = a.instance()
		if d.HasArg("regex") {
			req.SubscribedTopicRegex = kmsg.StringPtr(a.str("regex", ""))
		}
		if d.HasArg("assignor") {
			req.ServerAssignor = kmsg.StringPtr(a.str("assignor", ""))
		}
		h.send(a.client(), req)
	case "consumer-describe":
		a.known("client", "groups")
		h.send(a.client(), &kmsg.ConsumerGroupDescribeRequest{Version: 1, Groups: a.list("groups")})

	case "validate":
		// TxnOffsetCommit's membership check (KIP-447).
		a.known("group", "member", "gen", "instance")
		h.validate(a.str("group", ""), a.str("member", ""), int32(a.int("gen", -1)), a.instance())
	case "stage":
		a.known("pid", "epoch", "group", "offsets", "metadata")
		var offsets []TxnOffset
		for _, o := range a.list("offsets") {
			tp, off, ok := strings.Cut(o, "=")
			p := a.partition(tp)
			var n int64
			if _, err := fmt.Sscan(off, &n); !ok || err != nil {
				d.Fatalf(t, "offsets: %q is not topic/partition=offset", o)
			}
			offsets = append(offsets, TxnOffset{Topic: p.topic, Partition: p.partition, Offset: n, LeaderEpoch: -1, Metadata: a.str("metadata", "")})
		}
		h.stage(a.int("pid", -1), int16(a.int("epoch", -1)), a.str("group", ""), offsets...)
	case "complete":
		a.known("pid", "group", "commit", "abort")
		if d.HasArg("commit") == d.HasArg("abort") {
			d.Fatalf(t, "say commit or abort")
		}
		h.complete(a.int("pid", -1), a.str("group", ""), d.HasArg("commit"))
	case "pending-txn-offsets":
		// HasPendingTxnOffsets: is a transactional offset staged here?
		a.known("group", "parts")
		var res []string
		for _, tp := range a.partitions("parts") {
			res = append(res, fmt.Sprintf("%s/%d=%v", tp.topic, tp.partition, h.m.HasPendingTxnOffsets(a.str("group", ""), tp.topic, tp.partition)))
		}
		fmt.Fprintf(&h.buf, "pending %s\n", strings.Join(res, " "))

	case "tick":
		a.known()
		h.tick()
	case "expire":
		a.known()
		h.expire()
	case "drop-deleted-topics":
		a.known()
		h.dropDeleted()
	case "persisted":
		a.known()
		if !h.durable() {
			d.Fatalf(t, "nothing waits to be persisted")
		}
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	return h.buf.String()
}

// args reads one command's arguments, failing the test on a malformed one.
type args struct {
	t *testing.T
	d *datadriven.TestData
}

func (a args) known(keys ...string) { a.t.Helper(); transcript.Known(a.t, a.d, keys...) }

// str reads key=value; a value in double quotes is a Go string literal
// (for values datadriven would misparse, like the regex "(").
func (a args) str(key, def string) string {
	a.t.Helper()
	a.d.MaybeScanArgs(a.t, key, &def)
	if strings.HasPrefix(def, `"`) {
		s, err := strconv.Unquote(def)
		if err != nil {
			a.d.Fatalf(a.t, "%s=%s: %v", key, def, err)
		}
		return s
	}
	return def
}

func (a args) int(key string, def int64) int64 {
	a.t.Helper()
	a.d.MaybeScanArgs(a.t, key, &def)
	return def
}

// list reads key=(a, b); () is an empty list, a missing key nil.
func (a args) list(key string) []string {
	a.t.Helper()
	arg, ok := a.d.Arg(key)
	if !ok || len(arg.Vals) == 1 && arg.Vals[0] == "" {
		return nil
	}
	return arg.Vals
}

func (a args) client() string {
	a.t.Helper()
	var c string
	a.d.ScanArgs(a.t, "client", &c)
	return c
}

// instance is the group instance id: nil unless instance= is given.
func (a args) instance() *string {
	a.t.Helper()
	var s string
	if !a.d.MaybeScanArgs(a.t, "instance", &s) {
		return nil
	}
	return &s
}

type topicPartition struct {
	topic     string
	partition int32
}

func (a args) partition(s string) topicPartition {
	a.t.Helper()
	i := strings.LastIndexByte(s, '/')
	var p int32
	if i < 0 {
		a.d.Fatalf(a.t, "%q is not topic/partition", s)
	}
	if _, err := fmt.Sscan(s[i+1:], &p); err != nil {
		a.d.Fatalf(a.t, "%q is not topic/partition", s)
	}
	return topicPartition{s[:i], p}
}

func (a args) partitions(key string) []topicPartition {
	a.t.Helper()
	var tps []topicPartition
	for _, s := range a.list(key) {
		tps = append(tps, a.partition(s))
	}
	return tps
}
