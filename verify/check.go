package verify

import "fmt"

// Anomaly names, as they appear in Result.Violations, in the JSON output and
// in the table.
const (
	AnomalyLost                = "lost"
	AnomalyDuplicates          = "duplicates"
	AnomalyAbortedReads        = "aborted_reads"
	AnomalyOrderViolations     = "order_violations"
	AnomalyInconsistentOffsets = "inconsistent_offsets"
	AnomalyNonMonotonicPolls   = "nonmonotonic_polls"
	AnomalyPollSkips           = "poll_skips"
)

// Forbidden lists the anomalies a mode promises never to show. Whatever the
// mode, one offset holding two values is forbidden: no configuration permits
// the log to contradict itself.
func Forbidden(m Mode) []string {
	switch m {
	case AtMostOnce:
		return []string{AnomalyDuplicates, AnomalyInconsistentOffsets}
	case AtLeastOnce:
		return []string{AnomalyLost, AnomalyInconsistentOffsets}
	case ExactlyOnce:
		return []string{AnomalyLost, AnomalyDuplicates, AnomalyAbortedReads, AnomalyOrderViolations,
			AnomalyInconsistentOffsets, AnomalyNonMonotonicPolls, AnomalyPollSkips}
	case Share:
		return []string{AnomalyLost, AnomalyOverDelivered, AnomalyAcceptedTwice, AnomalyInconsistentOffsets}
	}
	return []string{AnomalyInconsistentOffsets}
}

// CheckOptions say what to check a history against. Zero fields are taken
// from the history's run event.
type CheckOptions struct {
	// InTopic is the topic producers write and the pipeline consumes.
	InTopic string
	// OutTopic is the topic the pipeline writes.
	OutTopic string
	// Promise is the guarantee to hold the history to.
	Promise Mode
	// DeliveryLimit is the share group's delivery-count limit (share
	// mode; default: the run event's delivery.count.limit, else 5).
	DeliveryLimit int32
}

// Result is what Check found. Counts are distinct input values unless said
// otherwise.
type Result struct {
	// Mode is the guarantee the history was held to.
	Mode Mode `json:"mode"`
	// Attempted counts values producers tried to send.
	Attempted int `json:"attempted"`
	// Acked counts acknowledged input writes (for transactional producers:
	// writes in transactions known to have committed).
	Acked int `json:"acked"`
	// InputRecords counts values the final reader found in the input log.
	InputRecords int `json:"input_records"`
	// Consumed counts values delivered to the output (read from the input,
	// processed and found in the final output log).
	Consumed int `json:"consumed"`
	// Polled counts records the pipeline's polls returned (with repeats).
	Polled int `json:"polled"`
	// Lost counts acknowledged writes missing from the input log, and
	// input values the group committed past that never reached the output
	// (share mode: records the share group settled with nothing in the
	// history to explain how; see ShareOutcome).
	Lost int `json:"lost"`
	// LostWrites is the part of Lost the broker lost: acknowledged writes
	// missing from the input log itself.
	LostWrites int `json:"lost_writes"`
	// Unseen counts input values that never reached the output and lie at
	// or past the group's final committed offset: the pipeline never
	// claimed to have processed them (a drain that did not finish, or a
	// consumer that never commits). Not lost, not delivered: unknown.
	Unseen int `json:"unseen"`
	// Duplicates counts values present more than once in the input log or
	// delivered more than once to the output.
	Duplicates int `json:"duplicates"`
	// AbortedReads counts values written by aborted transactions that a
	// read_committed reader returned or whose effect reached the output.
	AbortedReads int `json:"aborted_reads"`
	// OrderViolations counts adjacent pairs stored out of order: one
	// producer's values in a partition out of send order, or the output of
	// one input partition out of input order.
	OrderViolations int `json:"order_violations"`
	// InconsistentOffsets counts offsets seen holding two different values.
	InconsistentOffsets int `json:"inconsistent_offsets"`
	// NonMonotonicPolls counts polls that went backwards (or repeated an
	// offset) with no rebalance or rewind in between.
	NonMonotonicPolls int `json:"nonmonotonic_polls"`
	// PollSkips counts polls that jumped over a record the final reader
	// found, with no rebalance or rewind in between.
	PollSkips int `json:"poll_skips"`
	// OverDelivered counts share-mode records delivered over the limit,
	// twice with one delivery count, or after a confirmed ACCEPT/REJECT.
	OverDelivered int `json:"over_delivered"`
	// AcceptedTwice counts share-mode records with two confirmed ACCEPTs.
	AcceptedTwice int `json:"accepted_twice"`
	// Share is what became of each record in share mode.
	Share *ShareOutcome `json:"share,omitempty"`
	// Violations names the forbidden anomalies that occurred.
	Violations []string `json:"violations"`
	// Inconclusive is true when values are Unseen under a promise that
	// forbids loss: whether they would have arrived is unknown.
	Inconclusive bool `json:"inconclusive"`
	// OK is true when no forbidden anomaly occurred and the run is not
	// Inconclusive.
	OK bool `json:"ok"`
	// Examples holds a few instances of each anomaly found, for humans.
	Examples map[string][]string `json:"examples,omitempty"`
}

// Count returns the count of the named anomaly.
func (r *Result) Count(anomaly string) int {
	switch anomaly {
	case AnomalyLost:
		return r.Lost
	case AnomalyDuplicates:
		return r.Duplicates
	case AnomalyAbortedReads:
		return r.AbortedReads
	case AnomalyOrderViolations:
		return r.OrderViolations
	case AnomalyInconsistentOffsets:
		return r.InconsistentOffsets
	case AnomalyNonMonotonicPolls:
		return r.NonMonotonicPolls
	case AnomalyPollSkips:
		return r.PollSkips
	case AnomalyOverDelivered:
		return r.OverDelivered
	case AnomalyAcceptedTwice:
		return r.AcceptedTwice
	}
	return 0
}

const maxExamples = 5

func (r *Result) example(anomaly, format string, args ...any) {
	if r.Examples == nil {
		r.Examples = map[string][]string{}
	}
	if len(r.Examples[anomaly]) < maxExamples {
		r.Examples[anomaly] = append(r.Examples[anomaly], fmt.Sprintf(format, args...))
	}
}

// exampleUnseen keys the examples of values the group never committed
// past (Result.Unseen: not an anomaly, so not in Forbidden).
const exampleUnseen = "unseen"

// check finds one anomaly (or fills counts) in an index.
type check func(ix *index, r *Result)

// checks are the anomaly checks (and the plain counts). Their order does not
// matter: each writes only its own counts and examples.
var checks = []check{
	countWork,
	checkLost,
	checkUnseen,
	checkDuplicates,
	checkAbortedReads,
	checkSendOrder,
	checkOutputOrder,
	checkInconsistentOffsets,
	checkNonMonotonicPolls,
	checkPollSkips,
}

// Check finds the anomalies in h and judges them against the promise.
// Share mode has its own checks (checkShare); the others run every check
// and judge only the anomalies their promise forbids.
//
// The final reader's events (EvFinal) are the ground truth for what each
// log holds; acknowledgements, transaction outcomes, polls and the group's
// final offsets are compared against it. Missing events (a process killed
// before it flushed) can hide anomalies but never invent one.
func Check(h History, opts CheckOptions) Result {
	opts = runOptions(h, opts)
	ix := buildIndex(h, opts.InTopic, opts.OutTopic)
	res := Result{Mode: opts.Promise}
	if opts.Promise == Share {
		checkShare(ix, buildShareIndex(h, opts.InTopic), opts.DeliveryLimit, &res)
	} else {
		for _, c := range checks {
			c(ix, &res)
		}
	}
	res.judge()
	return res
}

// judge names the forbidden anomalies that occurred and decides OK.
func (r *Result) judge() {
	for _, a := range Forbidden(r.Mode) {
		if r.Count(a) > 0 {
			r.Violations = append(r.Violations, a)
		}
	}
	if r.Violations == nil {
		r.Violations = []string{}
	}
	for _, a := range Forbidden(r.Mode) {
		if a == AnomalyLost && r.Unseen > 0 {
			r.Inconclusive = true
		}
	}
	r.OK = len(r.Violations) == 0 && !r.Inconclusive
}
