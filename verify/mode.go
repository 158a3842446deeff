package verify

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Mode is a delivery guarantee: the client configuration a run uses by
// default and the promise its history is checked against.
type Mode string

// The three guarantees of docs/GUARANTEES.md.
const (
	// AtMostOnce: acks=1, no retries, no idempotence; the pipeline commits
	// offsets before processing. Records may be lost, never duplicated.
	AtMostOnce Mode = "at-most-once"
	// AtLeastOnce: acks=all, retries, no idempotence; the pipeline commits
	// after processing. Records are never lost, may be duplicated.
	AtLeastOnce Mode = "at-least-once"
	// ExactlyOnce: idempotent, transactional producers, read_committed
	// consumers, the pipeline's offsets committed inside its transaction.
	// Nothing lost, duplicated, aborted-visible or reordered.
	ExactlyOnce Mode = "exactly-once"
	// Share: idempotent producers and share-group (KIP-932) consumers that
	// ACCEPT, RELEASE or REJECT each record at random. Every acknowledged
	// record ends accepted once or archived, none is delivered more than
	// the delivery-count limit (see ShareOutcome and docs/GUARANTEES.md).
	Share Mode = "share"
)

// Modes lists the three delivery guarantees from weakest to strongest
// (what --mode all runs); Share is a mode of its own.
var Modes = []Mode{AtMostOnce, AtLeastOnce, ExactlyOnce}

// ParseMode accepts a mode's name or a short alias (amo, alo, eos).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "at-most-once", "amo", "at_most_once":
		return AtMostOnce, nil
	case "at-least-once", "alo", "at_least_once":
		return AtLeastOnce, nil
	case "exactly-once", "eos", "exactly_once":
		return ExactlyOnce, nil
	case "share", "share-group", "kip-932":
		return Share, nil
	}
	return "", fmt.Errorf("unknown mode %q (want at-most-once, at-least-once, exactly-once or share)", s)
}

// Commit strategies of the pipeline (ConsumerProfile.Commit).
const (
	// CommitBefore commits the polled offsets, then processes.
	CommitBefore = "before"
	// CommitAfter processes, waits for every output to be acknowledged,
	// then commits.
	CommitAfter = "after"
	// CommitAuto lets the client commit in the background
	// (enable.auto.commit).
	CommitAuto = "auto"
	// CommitTxn commits offsets inside the output transaction.
	CommitTxn = "txn"
	// CommitNone never commits.
	CommitNone = "none"
	// CommitShare acknowledges each record to the share group (ACCEPT,
	// RELEASE or REJECT): there are no offsets to commit.
	CommitShare = "share"
)

// ProducerProfile is how producers (and the pipeline's output producer) are
// configured.
type ProducerProfile struct {
	// Acks is "0", "1" or "all".
	Acks string `json:"acks"`
	// Retries is the number of retries per record; -1 is unlimited.
	Retries int `json:"retries"`
	// Idempotent enables the idempotent producer.
	Idempotent bool `json:"idempotent"`
	// Transactional writes in transactions.
	Transactional bool `json:"transactional"`
	// MaxInFlight bounds produce requests in flight per broker.
	MaxInFlight int `json:"max_in_flight"`
	// LingerMs is how long to wait to fill a batch.
	LingerMs int `json:"linger_ms"`
	// AbortFraction is the share of producer transactions deliberately
	// aborted, so read_committed readers have something to hide.
	AbortFraction float64 `json:"abort_fraction"`
	// TxnRecords is the largest number of records per producer
	// transaction.
	TxnRecords int `json:"txn_records"`
}

// ConsumerProfile is how the pipeline consumes.
type ConsumerProfile struct {
	// Commit is CommitBefore, CommitAfter, CommitAuto, CommitTxn or
	// CommitNone.
	Commit string `json:"commit"`
	// AutoCommitIntervalMs is the background commit interval (CommitAuto).
	AutoCommitIntervalMs int `json:"auto_commit_interval_ms"`
	// ReadCommitted selects isolation level read_committed.
	ReadCommitted bool `json:"read_committed"`
	// MaxPollRecords bounds one poll.
	MaxPollRecords int `json:"max_poll_records"`
	// GroupProtocol is "classic" (JoinGroup/SyncGroup, the default) or
	// "consumer" (KIP-848 heartbeats and server-side assignment).
	GroupProtocol string `json:"group_protocol,omitempty"`
	// ReleaseFraction and RejectFraction are the shares of deliveries a
	// share consumer RELEASEs and REJECTs (CommitShare); it ACCEPTs the
	// rest. Each choice is a function of the seed, the value and its
	// delivery count, so a run's choices are reproducible.
	ReleaseFraction float64 `json:"release_fraction,omitempty"`
	RejectFraction  float64 `json:"reject_fraction,omitempty"`
}

// Profile is a whole client configuration.
type Profile struct {
	// Producer configures producers and the pipeline's output.
	Producer ProducerProfile `json:"producer"`
	// Consumer configures the pipeline's input.
	Consumer ConsumerProfile `json:"consumer"`
}

// DefaultProfile is the configuration docs/GUARANTEES.md gives for m: the
// same settings as eos/preset and exactly bench.
func DefaultProfile(m Mode) Profile {
	p := Profile{
		Producer: ProducerProfile{MaxInFlight: 5, LingerMs: 5, TxnRecords: 10},
		Consumer: ConsumerProfile{AutoCommitIntervalMs: 5000, MaxPollRecords: 100},
	}
	switch m {
	case AtMostOnce:
		p.Producer.Acks, p.Producer.Retries, p.Producer.MaxInFlight = "1", 0, 1
		p.Consumer.Commit = CommitBefore
	case AtLeastOnce:
		p.Producer.Acks, p.Producer.Retries = "all", -1
		p.Consumer.Commit = CommitAfter
	case Share:
		// Idempotent, so every value is in the input log once and each
		// record's fate is the share group's alone.
		p.Producer.Acks, p.Producer.Retries, p.Producer.Idempotent = "all", -1, true
		p.Consumer.Commit = CommitShare
		p.Consumer.ReleaseFraction, p.Consumer.RejectFraction = 0.25, 0.05
	default:
		p.Producer.Acks, p.Producer.Retries = "all", -1
		p.Producer.Idempotent, p.Producer.Transactional = true, true
		p.Producer.AbortFraction = 0.1
		p.Consumer.Commit, p.Consumer.ReadCommitted = CommitTxn, true
	}
	return p
}

// ProducerKeys and ConsumerKeys list the keys Set accepts, for help texts.
var (
	ProducerKeys = []string{"acks", "retries", "enable.idempotence", "transactional",
		"max.in.flight.requests.per.connection", "linger.ms", "abort.fraction", "transaction.records"}
	ConsumerKeys = []string{"commit", "enable.auto.commit", "auto.commit.interval.ms", "isolation.level", "max.poll.records", "group.protocol",
		"share.release.fraction", "share.reject.fraction"}
)

// SetProducer applies one producer override (Kafka's key names where they
// exist). Weakening a setting weakens what depends on it: acks other than
// all turns idempotence off, idempotence off turns transactions off, and
// transactions off moves a transactional pipeline to commit-after.
func (p *Profile) SetProducer(key, value string) error {
	bad := func(err error) error { return fmt.Errorf("--producer %s=%s: %v", key, value, err) }
	switch key {
	case "acks":
		switch value {
		case "0", "1":
			p.Producer.Acks = value
			p.Producer.Idempotent = false
			p.setTransactional(false)
		case "all", "-1":
			p.Producer.Acks = "all"
		default:
			return bad(fmt.Errorf("want 0, 1 or all"))
		}
	case "retries":
		n, err := strconv.Atoi(value)
		if err != nil || n < -1 {
			return bad(fmt.Errorf("want a number of retries, -1 for unlimited"))
		}
		p.Producer.Retries = n
	case "enable.idempotence":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad(err)
		}
		p.Producer.Idempotent = b
		if b {
			p.Producer.Acks = "all"
		} else {
			p.setTransactional(false)
		}
	case "transactional", "transactional.id":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad(fmt.Errorf("want true or false (verify names the transactional ids itself)"))
		}
		p.setTransactional(b)
		if b {
			p.Producer.Idempotent, p.Producer.Acks = true, "all"
		}
	case "max.in.flight.requests.per.connection", "max.in.flight":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return bad(fmt.Errorf("want a positive number"))
		}
		p.Producer.MaxInFlight = n
	case "linger.ms":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return bad(fmt.Errorf("want milliseconds"))
		}
		p.Producer.LingerMs = n
	case "abort.fraction":
		f, err := strconv.ParseFloat(value, 64)
		if err != nil || f < 0 || f > 1 {
			return bad(fmt.Errorf("want a fraction between 0 and 1"))
		}
		p.Producer.AbortFraction = f
	case "transaction.records":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return bad(fmt.Errorf("want a positive number"))
		}
		p.Producer.TxnRecords = n
	default:
		return fmt.Errorf("--producer %s: unknown key (known: %s)", key, strings.Join(ProducerKeys, ", "))
	}
	return nil
}

func (p *Profile) setTransactional(b bool) {
	p.Producer.Transactional = b
	if !b && p.Consumer.Commit == CommitTxn {
		p.Consumer.Commit = CommitAfter
	}
}

// SetConsumer applies one consumer override.
func (p *Profile) SetConsumer(key, value string) error {
	bad := func(err error) error { return fmt.Errorf("--consumer %s=%s: %v", key, value, err) }
	switch key {
	case "commit":
		switch value {
		case CommitBefore, CommitAfter, CommitAuto, CommitTxn, CommitNone:
			if p.Consumer.Commit == CommitShare {
				return bad(fmt.Errorf("share consumers acknowledge records instead of committing offsets"))
			}
			p.Consumer.Commit = value
		default:
			return bad(fmt.Errorf("want before, after, auto, txn or none"))
		}
	case "enable.auto.commit":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad(err)
		}
		if b {
			p.Consumer.Commit = CommitAuto
		} else if p.Consumer.Commit == CommitAuto {
			p.Consumer.Commit = CommitAfter
		}
	case "auto.commit.interval.ms":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return bad(fmt.Errorf("want milliseconds"))
		}
		p.Consumer.AutoCommitIntervalMs = n
	case "isolation.level":
		switch value {
		case "read_committed":
			p.Consumer.ReadCommitted = true
		case "read_uncommitted":
			p.Consumer.ReadCommitted = false
		default:
			return bad(fmt.Errorf("want read_committed or read_uncommitted"))
		}
	case "max.poll.records":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return bad(fmt.Errorf("want a positive number"))
		}
		p.Consumer.MaxPollRecords = n
	case "share.release.fraction", "share.reject.fraction":
		f, err := strconv.ParseFloat(value, 64)
		if err != nil || f < 0 || f > 1 {
			return bad(fmt.Errorf("want a fraction between 0 and 1"))
		}
		if key == "share.release.fraction" {
			p.Consumer.ReleaseFraction = f
		} else {
			p.Consumer.RejectFraction = f
		}
	case "group.protocol":
		switch value {
		case "classic":
			p.Consumer.GroupProtocol = ""
		case "consumer":
			p.Consumer.GroupProtocol = value
		default:
			return bad(fmt.Errorf("want classic or consumer"))
		}
	default:
		return fmt.Errorf("--consumer %s: unknown key (known: %s)", key, strings.Join(ConsumerKeys, ", "))
	}
	return nil
}

// Apply applies key=value overrides, producer ones first.
func (p *Profile) Apply(producer, consumer []string) error {
	for _, kv := range producer {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--producer %q: want key=value", kv)
		}
		if err := p.SetProducer(strings.TrimSpace(k), strings.TrimSpace(v)); err != nil {
			return err
		}
	}
	for _, kv := range consumer {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--consumer %q: want key=value", kv)
		}
		if err := p.SetConsumer(strings.TrimSpace(k), strings.TrimSpace(v)); err != nil {
			return err
		}
	}
	return p.Validate()
}

// Validate reports combinations no client can run.
func (p Profile) Validate() error {
	switch {
	case p.Producer.Idempotent && p.Producer.Acks != "all":
		return fmt.Errorf("enable.idempotence=true needs acks=all")
	case p.Producer.Transactional && !p.Producer.Idempotent:
		return fmt.Errorf("transactional=true needs enable.idempotence=true")
	case p.Consumer.Commit == CommitTxn && !p.Producer.Transactional:
		return fmt.Errorf("commit=txn needs a transactional producer")
	case p.Producer.Idempotent && p.Producer.MaxInFlight > 5:
		return fmt.Errorf("enable.idempotence=true needs max.in.flight.requests.per.connection <= 5")
	case p.Consumer.Commit == CommitShare && p.Producer.Transactional:
		return fmt.Errorf("share mode checks plain (idempotent or not) producers; transactional=true is not supported there")
	case p.Consumer.ReleaseFraction+p.Consumer.RejectFraction > 1:
		return fmt.Errorf("share.release.fraction + share.reject.fraction must not exceed 1")
	}
	return nil
}

// String renders the profile as Kafka-style settings, for reports.
func (p Profile) String() string {
	kv := map[string]string{
		"acks":               p.Producer.Acks,
		"retries":            strconv.Itoa(p.Producer.Retries),
		"enable.idempotence": strconv.FormatBool(p.Producer.Idempotent),
		"transactional":      strconv.FormatBool(p.Producer.Transactional),
		"commit":             p.Consumer.Commit,
		"isolation.level":    map[bool]string{true: "read_committed", false: "read_uncommitted"}[p.Consumer.ReadCommitted],
	}
	if p.Consumer.GroupProtocol != "" {
		kv["group.protocol"] = p.Consumer.GroupProtocol
	}
	if p.Consumer.Commit == CommitShare {
		delete(kv, "isolation.level")
		kv["share.release.fraction"] = strconv.FormatFloat(p.Consumer.ReleaseFraction, 'g', -1, 64)
		kv["share.reject.fraction"] = strconv.FormatFloat(p.Consumer.RejectFraction, 'g', -1, 64)
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "=" + kv[k])
	}
	return b.String()
}
