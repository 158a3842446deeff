package broker

import (
	"errors"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
	"github.com/twmb/franz-go/pkg/kerr"
)

// errorCode maps a domain error to the Kafka error code a real broker would
// return. Unknown errors become UNKNOWN_SERVER_ERROR (and should be logged by
// the caller).
func errorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case isKerr(err):
		ke, _ := asKerr(err)
		return ke.code.Code
	case errors.Is(err, producerstate.ErrOutOfOrderSequence):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, producerstate.ErrInvalidEpoch):
		return kerr.InvalidProducerEpoch.Code
	case errors.Is(err, producerstate.ErrUnknownProducer):
		return kerr.UnknownProducerID.Code
	case errors.Is(err, producerstate.ErrTooManyProducers):
		return kerr.ThrottlingQuotaExceeded.Code
	case errors.Is(err, producerstate.ErrInvalidTxnState):
		return kerr.InvalidTxnState.Code
	case errors.Is(err, cluster.ErrTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, cluster.ErrUnknownTopic):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, cluster.ErrInvalidTopic):
		return kerr.InvalidTopicException.Code
	case errors.Is(err, cluster.ErrInvalidReplicationFactor):
		return kerr.InvalidReplicationFactor.Code
	case errors.Is(err, cluster.ErrInvalidPartitions):
		return kerr.InvalidPartitions.Code
	case errors.Is(err, errPartitionLimit):
		return kerr.PolicyViolation.Code
	case errors.Is(err, cluster.ErrReadOnlyConfig):
		return kerr.InvalidRequest.Code
	case errors.Is(err, cluster.ErrInvalidConfig):
		return kerr.InvalidConfig.Code
	case errors.Is(err, log.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, partition.ErrOffline), errors.Is(err, log.ErrLogOffline), errors.Is(err, partition.ErrForeignDir):
		return kerr.KafkaStorageError.Code
	case errors.Is(err, record.ErrCorrupt), errors.Is(err, record.ErrShort):
		return kerr.CorruptMessage.Code
	case errors.Is(err, record.ErrMagic):
		return kerr.UnsupportedForMessageFormat.Code
	case errors.Is(err, record.ErrInvalid):
		return kerr.InvalidRecord.Code
	default:
		return kerr.UnknownServerError.Code
	}
}

// errMsg returns a pointer to err's text for the ErrorMessage fields, nil
// for no error.
func errMsg(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}

// errorName is the Kafka name of an error code, for metrics labels.
func errorName(code int16) string {
	if e := kerr.TypedErrorForCode(code); e != nil {
		return e.Message
	}
	return "UNKNOWN"
}

// kerrError carries a specific Kafka error code and message through Go
// error plumbing.
type kerrError struct {
	code *kerr.Error
	msg  string
}

func (e *kerrError) Error() string { return e.msg }

func asKerr(err error) (*kerrError, bool) {
	var ke *kerrError
	ok := errors.As(err, &ke)
	return ke, ok
}

func isKerr(err error) bool { _, ok := asKerr(err); return ok }
