package cli

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/share"
	"github.com/exactly/exactly/internal/txn"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/spf13/cobra"
)

// transactionStateTopic is the transaction coordinator's log.
const transactionStateTopic = "__transaction_state"

// CheckDataCommand returns `exactly check-data`: offline verification of a
// data directory, and the operator's way to bring a corrupt partition back.
func CheckDataCommand() *cobra.Command {
	var dir, truncate string
	cmd := &cobra.Command{
		Use:   "check-data",
		Short: "Verify a data directory offline (segments, indexes, internal logs); exit 1 on damage",
		Long: `Verify every partition of a data directory while no broker runs on it:
each segment's record batches (CRC-32C, framing, contiguous offsets), index
files, producer state snapshots, and the records of the internal logs
(__consumer_offsets, __transaction_state, __share_group_state). Damage below a partition's
recovery point is reported with file, byte and offset; problems the next
start repairs by itself (a torn tail above the recovery point, an index to
rebuild) are notes. Exit status: 0 clean, 1 damage, 2 could not check (for
example, a broker holds the directory: check-data takes its lock).

--truncate-corrupt TOPIC-PARTITION cuts that partition at its first damage:
the damaged batch and every record after it are removed, and its recovery
point comes down to the new end. Copy the data directory first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			c := &checker{fs: vfs.OS(), dir: dir, out: cmd.OutOrStdout()}
			return c.run(truncate)
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "./data", "data directory to check (log.dirs)")
	cmd.Flags().StringVar(&truncate, "truncate-corrupt", "", "TOPIC-PARTITION to cut at its first damage (after copying the directory)")
	return cmd
}

// checker runs one check-data.
type checker struct {
	fs  vfs.FS
	dir string
	out io.Writer
	// parts are the partitions to check: the catalog's on a single node,
	// the directories this node holds in a cluster.
	parts     []partRef
	clusterID string
	rps       log.RecoveryPoints
	damaged   int
}

func (c *checker) run(truncate string) error {
	dd, err := cluster.LockDataDir(c.fs, c.dir)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	defer dd.Close()
	if cluster.SingleNodeCatalog(c.fs, c.dir) {
		cat, err := cluster.ReadCatalog(c.fs, c.dir)
		if err != nil {
			return &ExitError{Code: 2, Err: err}
		}
		c.clusterID = cat.ClusterID()
		for _, t := range cat.Topics() {
			for i := range t.Partitions {
				c.parts = append(c.parts, partRef{topic: t.Name, id: t.ID, index: i})
			}
		}
	} else {
		// A cluster node: its catalog lives in the metadata quorum's log
		// (whose records the node checks when it starts), and it holds
		// only some partitions: those are its directories, each named
		// topic-N and identified by its marker.
		c.clusterID = dd.ClusterID()
		if c.parts, err = heldPartitions(c.fs, c.dir); err != nil {
			return &ExitError{Code: 2, Err: err}
		}
	}
	rpPath := filepath.Join(c.dir, cluster.RecoveryPointsName)
	if c.rps, err = log.ReadRecoveryPoints(c.fs, rpPath); err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if truncate != "" {
		return c.truncate(truncate, rpPath)
	}
	fmt.Fprintf(c.out, "checking %s (cluster %s, format version %d)\n", c.dir, c.clusterID, cluster.FormatVersion)
	for _, p := range c.parts {
		if err := c.checkPartition(p); err != nil {
			return &ExitError{Code: 2, Err: err}
		}
	}
	if c.damaged > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("%d partition(s) damaged; to bring one back, stop the broker, copy %s, then run exactly check-data --data-dir %s --truncate-corrupt TOPIC-PARTITION",
			c.damaged, c.dir, c.dir)}
	}
	fmt.Fprintln(c.out, "no damage found")
	return nil
}

// partRef is one partition to check.
type partRef struct {
	topic string
	id    cluster.TopicID
	index int32
}

func (p partRef) name() string { return p.topic + "-" + strconv.Itoa(int(p.index)) }

func (p partRef) key() log.PartitionKey {
	return log.PartitionKey{Topic: p.topic, Partition: p.index, TopicID: p.id}
}

// heldPartitions lists the partition directories of a cluster node's data
// directory: every entry named topic-N with a partition marker.
func heldPartitions(fsys vfs.FS, dir string) ([]partRef, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []partRef
	for _, name := range names {
		i := strings.LastIndexByte(name, '-')
		if i <= 0 || cluster.IsDataDirFile(name) {
			continue
		}
		n, err := strconv.Atoi(name[i+1:])
		if err != nil || n < 0 {
			continue
		}
		id, ok, err := partition.ReadMarker(fsys, filepath.Join(dir, name))
		if err != nil || !ok {
			continue // not a partition exactly created
		}
		out = append(out, partRef{topic: name[:i], id: cluster.TopicID(id), index: int32(n)})
	}
	return out, nil
}

func (c *checker) checkPartition(p partRef) error {
	name := p.name()
	rp := c.rps[p.key()]
	rep, err := partition.Check(c.fs, filepath.Join(c.dir, name), partition.TopicID(p.id), rp, recordCheck(p.topic))
	if err != nil {
		c.damaged++
		fmt.Fprintf(c.out, "%s: DAMAGED: %v\n", name, err)
		return nil
	}
	status := "ok"
	if len(rep.Damage) > 0 {
		c.damaged++
		status = "DAMAGED"
	}
	fmt.Fprintf(c.out, "%s: %s: %d segment(s), %d bytes, offsets %d..%d, recovery point %d\n",
		name, status, rep.Segments, rep.Bytes, rep.Start, rep.End, rp)
	for _, d := range rep.Damage {
		fmt.Fprintf(c.out, "  damage: %v\n", d)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(c.out, "  note: %s\n", n)
	}
	return nil
}

// recordCheck returns the decoder of an internal topic's records, nil for
// others (their records are the producers' business).
func recordCheck(topic string) func(h *record.Header, batch []byte) error {
	switch topic {
	case group.OffsetsTopic:
		return func(h *record.Header, batch []byte) error {
			if h.IsControl() {
				return nil
			}
			var derr error
			ferr := record.ForEach(*h, batch, func(r record.Record) bool {
				derr = group.CheckRecord(r.Key, r.Value)
				return derr == nil
			})
			if ferr != nil {
				return ferr
			}
			return derr
		}
	case share.StateTopic:
		return func(h *record.Header, batch []byte) error {
			if h.IsControl() {
				return nil
			}
			var derr error
			ferr := record.ForEach(*h, batch, func(r record.Record) bool {
				derr = share.CheckRecord(r.Key, r.Value)
				return derr == nil
			})
			if ferr != nil {
				return ferr
			}
			return derr
		}
	case transactionStateTopic:
		return func(_ *record.Header, batch []byte) error {
			return txn.DecodeBatches(batch, func(int64, txn.Record) error { return nil })
		}
	}
	return nil
}

// truncate cuts one partition at its first damage and lowers its
// recovery point to the new end.
func (c *checker) truncate(tp, rpPath string) error {
	i := strings.LastIndexByte(tp, '-')
	idx, err := strconv.Atoi(tp[i+1:])
	if i <= 0 || err != nil {
		return &ExitError{Code: 2, Err: fmt.Errorf("--truncate-corrupt %q: want TOPIC-PARTITION", tp)}
	}
	j := slices.IndexFunc(c.parts, func(p partRef) bool { return p.topic == tp[:i] && p.index == int32(idx) })
	if j < 0 {
		return &ExitError{Code: 2, Err: fmt.Errorf("--truncate-corrupt %q: no such partition in %s", tp, c.dir)}
	}
	k := c.parts[j].key()
	end, err := partition.TruncateCorrupt(c.fs, filepath.Join(c.dir, tp), c.rps[k])
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	c.rps[k] = end
	if err := log.WriteRecoveryPoints(c.fs, rpPath, c.rps); err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	fmt.Fprintf(c.out, "%s: truncated at offset %d (records from %d on are gone); recovery point now %d\n", tp, end, end, end)
	return nil
}
