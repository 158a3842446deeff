// Package share consumes a share group (KIP-932, Kafka queues) with a
// dead-letter topic: every record a handler cannot process ends up either
// accepted or published to the dead-letter topic, never dropped silently.
//
// A Consumer polls its share group and calls Config.Handler once per
// delivered record, one at a time:
//
//   - nil: the record is ACCEPTed;
//   - an error wrapped with Permanent: the record is published to
//     Config.DeadLetterTopic (acks=all, waited for), then REJECTed;
//   - any other error on a delivery before the last: the record is
//     RELEASEd and the broker delivers it again (to any member), with its
//     delivery count one higher;
//   - any other error on the last delivery (delivery count == the group's
//     group.share.delivery.count.limit, where the broker would archive the
//     record after a RELEASE): published to the dead-letter topic, then
//     REJECTed.
//
// So a poison record is handled exactly limit times when nothing fails
// around it, and then lands in the dead-letter topic. The dead-letter record
// keeps the key, value and headers and adds HeaderTopic, HeaderPartition,
// HeaderOffset, HeaderTimestamp, HeaderGroup, HeaderDeliveryCount and
// HeaderError.
//
// # Guarantee
//
// Share groups deliver at least once: a consumer that dies, or whose
// acknowledgement is lost, leaves its records to be delivered again when
// their acquisition locks expire. So:
//
//   - the handler may see a record again after it returned nil (make it
//     idempotent, for instance with eos/dedup);
//   - a record may be published to the dead-letter topic more than once,
//     if the REJECT after the publish is lost (dead-letter readers
//     deduplicate on the source topic, partition and offset headers);
//   - a record is never archived without either an ACCEPT after a
//     successful handler call or a published dead-letter copy, as long as
//     the Consumer decides it: the dead-letter publish is retried (the
//     record's lock renewed meanwhile, best effort: RENEW needs
//     ShareAcknowledge v2, and a renewal that comes too late leaves the
//     broker to archive the record, the copy still to come) until it
//     succeeds or Run's context
//     ends (then Run returns an *UndecidedError naming the record it had to
//     release on its last delivery). Records the Consumer never decides — its process killed with
//     them locked, their delivery count then reaching the limit through
//     lock expiries — are archived by the broker without a handler call
//     the Consumer saw fail; `exactly verify --mode share` measures the
//     broker side of this promise.
//
// The share group must exist with the records' starting point the caller
// wants: share groups start at the log end by default; StartAtEarliest sets
// share.auto.offset.reset=earliest on the group.
package share
