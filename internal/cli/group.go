package cli

// exactly group: consumer group administration in the shape of Kafka's
// kafka-consumer-groups.sh (list, describe with offsets and lag, delete,
// reset-offsets with a dry run by default).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GroupCommand returns the "group" command: list, describe, delete and
// reset-offsets, which administer the consumer groups of the brokers named
// by --bootstrap-server, like kafka-consumer-groups.sh.
func GroupCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "group",
		Short: "List, describe, delete consumer groups and reset their offsets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(groupListCommand(f), groupDescribeCommand(f), groupDeleteCommand(f), groupResetCommand(f))
	return cmd
}

func groupListCommand(f *adminFlags) *cobra.Command {
	var states, types []string
	var showState bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List groups (with --state: and their state, optionally filtered; --type share for share groups)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				for _, t := range types {
					if t != "classic" && t != "consumer" && t != "share" {
						return fmt.Errorf("--type %q: want classic, consumer or share", t)
					}
				}
				listed, err := adm.ListGroupsByType(ctx, types, states...)
				if err != nil {
					return requestError("listing groups", f.bootstrap, err)
				}
				groups := listed.Sorted()
				out := cmd.OutOrStdout()
				if !showState && len(states) == 0 {
					for _, g := range groups {
						fmt.Fprintln(out, g.Group)
					}
					return nil
				}
				tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "GROUP\tPROTOCOL-TYPE\tSTATE")
				for _, g := range groups {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", g.Group, orDash(g.ProtocolType), g.State)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&showState, "state", false, "show each group's protocol type and state")
	cmd.Flags().StringSliceVar(&states, "states", nil, "only groups in these states (e.g. Stable,Empty); implies --state")
	cmd.Flags().StringSliceVar(&types, "type", nil, "only groups of these types: classic, consumer, share")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// describedMember is who holds a partition.
type describedMember struct {
	id, host, client string
}

func groupDescribeCommand(f *adminFlags) *cobra.Command {
	var members, state, all, shareGroups bool
	cmd := &cobra.Command{
		Use:   "describe GROUP...",
		Short: "Show each partition's committed offset, log end offset, lag and owner (or --members, --state; --share for share groups)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !all {
				return errors.New("name at least one group, or --all-groups")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if members && state {
				return errors.New("--members and --state cannot be used together")
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				if shareGroups {
					return describeShareGroups(ctx, cmd.OutOrStdout(), adm, args, all, f.bootstrap)
				}
				if all {
					// Share groups have no committed offsets: --share.
					listed, err := adm.ListGroupsByType(ctx, []string{"classic", "consumer"})
					if err != nil {
						return requestError("listing groups", f.bootstrap, err)
					}
					args = listed.Groups()
					sort.Strings(args)
				}
				described, err := adm.DescribeGroups(ctx, args...)
				if err != nil {
					return requestError("describing groups", f.bootstrap, err)
				}
				out := cmd.OutOrStdout()
				for i, name := range args {
					if i > 0 {
						fmt.Fprintln(out)
					}
					g, ok := described[name]
					switch {
					case !ok:
						return fmt.Errorf("describing group %q: the broker did not answer for it", name)
					case g.Err != nil && errors.Is(g.Err, kerr.GroupIDNotFound), g.Err == nil && g.State == "Dead":
						return fmt.Errorf("consumer group %q does not exist", name)
					case g.Err != nil:
						return fmt.Errorf("describing group %q: %w", name, g.Err)
					}
					switch {
					case members:
						writeGroupMembers(out, g)
					case state:
						writeGroupState(out, g)
					default:
						if err := writeGroupOffsets(ctx, out, adm, g); err != nil {
							return requestError("describing group "+name, f.bootstrap, err)
						}
					}
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&members, "members", false, "list members and how many partitions each holds")
	fl.BoolVar(&state, "state", false, "show the group's coordinator, assignment strategy, state and member count")
	fl.BoolVar(&all, "all-groups", false, "describe every group")
	fl.BoolVar(&shareGroups, "share", false, "describe share groups: members, and per partition the share-partition start offset (SPSO) and lag")
	return cmd
}

func writeGroupMembers(out io.Writer, g kadm.DescribedGroup) {
	if len(g.Members) == 0 {
		fmt.Fprintf(out, "Consumer group '%s' has no active members.\n", g.Group)
		return
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tCONSUMER-ID\tHOST\tCLIENT-ID\t#PARTITIONS")
	for _, m := range g.Members {
		n := 0
		if ca, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range ca.Topics {
				n += len(t.Partitions)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", g.Group, m.MemberID, m.ClientHost, m.ClientID, n)
	}
	tw.Flush()
}

func writeGroupState(out io.Writer, g kadm.DescribedGroup) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tCOORDINATOR (ID)\tASSIGNMENT-STRATEGY\tSTATE\t#MEMBERS")
	fmt.Fprintf(tw, "%s\t%s:%d (%d)\t%s\t%s\t%d\n", g.Group, g.Coordinator.Host, g.Coordinator.Port, g.Coordinator.NodeID,
		orDash(g.Protocol), g.State, len(g.Members))
	tw.Flush()
}

// writeGroupOffsets prints one row per partition that the group has a
// committed offset for or that a member is assigned.
func writeGroupOffsets(ctx context.Context, out io.Writer, adm *kadm.Client, g kadm.DescribedGroup) error {
	owners := map[string]map[int32]describedMember{}
	for _, m := range g.Members {
		ca, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, t := range ca.Topics {
			if owners[t.Topic] == nil {
				owners[t.Topic] = map[int32]describedMember{}
			}
			for _, p := range t.Partitions {
				owners[t.Topic][p] = describedMember{id: m.MemberID, host: m.ClientHost, client: m.ClientID}
			}
		}
	}
	committed, err := adm.FetchOffsets(ctx, g.Group)
	if err != nil {
		return err
	}
	if err := committed.Error(); err != nil {
		return err
	}
	rows := map[string]map[int32]bool{}
	add := func(t string, p int32) {
		if rows[t] == nil {
			rows[t] = map[int32]bool{}
		}
		rows[t][p] = true
	}
	committed.Each(func(o kadm.OffsetResponse) { add(o.Topic, o.Partition) })
	for t, ps := range owners {
		for p := range ps {
			add(t, p)
		}
	}
	topics := make([]string, 0, len(rows))
	for t := range rows {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	var ends kadm.ListedOffsets
	if len(topics) > 0 {
		if ends, err = adm.ListEndOffsets(ctx, topics...); err != nil {
			return err
		}
	}
	if len(g.Members) == 0 {
		fmt.Fprintf(out, "Consumer group '%s' has no active members.\n\n", g.Group)
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tCONSUMER-ID\tHOST\tCLIENT-ID")
	for _, t := range topics {
		parts := make([]int32, 0, len(rows[t]))
		for p := range rows[t] {
			parts = append(parts, p)
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
		for _, p := range parts {
			cur, lag, end := "-", "-", "-"
			var c int64 = -1
			if o, ok := committed.Lookup(t, p); ok && o.At >= 0 {
				c = o.At
				cur = strconv.FormatInt(c, 10)
			}
			if e, ok := ends.Lookup(t, p); ok && e.Err == nil {
				end = strconv.FormatInt(e.Offset, 10)
				if c >= 0 {
					lag = strconv.FormatInt(max(e.Offset-c, 0), 10)
				}
			}
			m, ok := owners[t][p]
			if !ok {
				m = describedMember{id: "-", host: "-", client: "-"}
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Group, t, p, cur, end, lag, m.id, m.host, m.client)
		}
	}
	return tw.Flush()
}

func groupDeleteCommand(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete GROUP...",
		Short: "Delete consumer groups (they must have no active members) and their committed offsets",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				resps, err := adm.DeleteGroups(ctx, args...)
				if err != nil {
					return requestError("deleting groups", f.bootstrap, err)
				}
				var failed []string
				for _, name := range args {
					r, ok := resps[name]
					switch {
					case !ok:
						failed = append(failed, fmt.Sprintf("%s: no answer", name))
					case errors.Is(r.Err, kerr.NonEmptyGroup):
						failed = append(failed, fmt.Sprintf("%s: the group is not empty (stop its consumers first)", name))
					case errors.Is(r.Err, kerr.GroupIDNotFound):
						failed = append(failed, fmt.Sprintf("%s: the group does not exist", name))
					case r.Err != nil:
						failed = append(failed, fmt.Sprintf("%s: %v", name, r.Err))
					default:
						fmt.Fprintf(cmd.OutOrStdout(), "Deleted consumer group %s.\n", name)
					}
				}
				if len(failed) > 0 {
					return fmt.Errorf("deleting groups: %s", strings.Join(failed, "; "))
				}
				return nil
			})
		},
	}
}

// resetSpec is how reset-offsets picks the new offsets.
type resetSpec struct {
	earliest, latest bool
	toOffset         int64
	toOffsetSet      bool
	shiftBy          int64
	shiftBySet       bool
	toDatetime       string
	at               time.Time // toDatetime, parsed by validate
}

func (s *resetSpec) validate() error {
	n := 0
	for _, b := range []bool{s.earliest, s.latest, s.toOffsetSet, s.shiftBySet, s.toDatetime != ""} {
		if b {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime")
	}
	if s.toDatetime != "" {
		at, err := parseResetTime(s.toDatetime)
		if err != nil {
			return err
		}
		s.at = at
	}
	return nil
}

// parseResetTime reads --to-datetime: RFC 3339, or Kafka's
// YYYY-MM-DDTHH:mm:SS[.sss] (local time) with an optional zone.
func parseResetTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000Z0700", "2006-01-02T15:04:05Z0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"2006-01-02T15:04:05.000", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--to-datetime %q: want YYYY-MM-DDTHH:mm:SS[.sss] with an optional zone (Z, +01:00), e.g. 2026-12-05T09:30:00Z", v)
}

func groupResetCommand(f *adminFlags) *cobra.Command {
	var (
		group         string
		topics        []string
		allTopics     bool
		execute, dryR bool
		shareGroup    bool
		spec          resetSpec
	)
	cmd := &cobra.Command{
		Use:   "reset-offsets --group GROUP (--topic TOPIC[:P,P...] | --all-topics) (--to-earliest | --to-latest | --to-offset N | --shift-by N | --to-datetime T) [--execute]",
		Short: "Reset a group's committed offsets, or a share group's start offsets (a dry run unless --execute)",
		Long: `Reset the committed offsets of an inactive group (no members) for the given
topics, or for every topic it has offsets for with --all-topics. A topic may be
narrowed to some partitions with TOPIC:0,2. Offsets outside a partition's log
are clamped to its start or end. Without --execute only the plan is printed.

For a share group (KIP-932; found by name, or named with --share, which also
resets a share group that does not exist yet) the share-partition start
offset is set instead (AlterShareGroupOffsets): every record from it on is
delivered again, and the in-flight state of each partition reset is dropped.
The group must have no members (Kafka's rule; the broker answers
NON_EMPTY_GROUP otherwise); --all-topics means every partition the share
group has state for, and --shift-by moves the current start offset.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec.toOffsetSet = cmd.Flags().Changed("to-offset")
			spec.shiftBySet = cmd.Flags().Changed("shift-by")
			switch {
			case group == "":
				return errors.New("--group is required")
			case len(topics) == 0 && !allTopics:
				return errors.New("name the topics with --topic, or use --all-topics")
			case len(topics) > 0 && allTopics:
				return errors.New("--topic and --all-topics cannot be used together")
			case execute && dryR:
				return errors.New("--execute and --dry-run cannot be used together")
			}
			if err := spec.validate(); err != nil {
				return err
			}
			wanted := map[string][]int32{} // nil slice: every partition
			for _, t := range topics {
				name, parts, err := parseTopicPartitions(t)
				if err != nil {
					return err
				}
				wanted[name] = append(wanted[name], parts...)
				if parts == nil {
					wanted[name] = nil
				}
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				if !shareGroup {
					listed, err := adm.ListGroupsByType(ctx, []string{"share"})
					if err != nil {
						return requestError("listing share groups", f.bootstrap, err)
					}
					_, shareGroup = listed[group]
				}
				plan := planReset
				if shareGroup {
					plan = planShareReset
				}
				offsets, err := plan(ctx, adm, group, wanted, allTopics, spec)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tNEW-OFFSET")
				for _, o := range offsets.Sorted() {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", group, o.Topic, o.Partition, o.At)
				}
				tw.Flush()
				switch {
				case !execute && shareGroup:
					fmt.Fprintln(out, "\nDry run: nothing changed (add --execute to set these share-partition start offsets).")
					return nil
				case !execute:
					fmt.Fprintln(out, "\nDry run: nothing changed (add --execute to commit these offsets).")
					return nil
				case shareGroup:
					return executeShareReset(ctx, out, adm, group, offsets, f.bootstrap)
				}
				resps, err := adm.CommitOffsets(ctx, group, offsets)
				if err != nil {
					return requestError("committing offsets", f.bootstrap, err)
				}
				if err := resps.Error(); err != nil {
					if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.RebalanceInProgress) {
						return fmt.Errorf("group %q became active while resetting; nothing reliable was committed: %w", group, err)
					}
					return fmt.Errorf("committing offsets for group %q: %w", group, err)
				}
				fmt.Fprintf(out, "Committed %d offsets for group %s.\n", len(offsets.Sorted()), group)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&group, "group", "", "the consumer or share group")
	fl.StringArrayVar(&topics, "topic", nil, "topic to reset, optionally TOPIC:P,P,... for some partitions (repeatable)")
	fl.BoolVar(&allTopics, "all-topics", false, "every topic the group has committed offsets (share group: state) for")
	fl.BoolVar(&spec.earliest, "to-earliest", false, "reset to each partition's log start offset")
	fl.BoolVar(&spec.latest, "to-latest", false, "reset to each partition's log end offset")
	fl.Int64Var(&spec.toOffset, "to-offset", 0, "reset to this offset (clamped to the log)")
	fl.Int64Var(&spec.shiftBy, "shift-by", 0, "move the committed (share group: start) offset by N (negative: back), clamped to the log")
	fl.StringVar(&spec.toDatetime, "to-datetime", "", "reset to the first record at or after this time (YYYY-MM-DDTHH:mm:SS[.sss], optional zone); the log end if none")
	fl.BoolVar(&shareGroup, "share", false, "treat GROUP as a share group even if it does not exist yet")
	fl.BoolVar(&execute, "execute", false, "commit the new offsets (default: only print them)")
	fl.BoolVar(&dryR, "dry-run", false, "only print the new offsets (the default)")
	return cmd
}

// executeShareReset sets the planned share-partition start offsets.
func executeShareReset(ctx context.Context, out io.Writer, adm *kadm.Client, group string, plan kadm.Offsets, bootstrap string) error {
	resps, err := adm.AlterShareGroupOffsets(ctx, group, plan)
	switch {
	case errors.Is(err, kerr.NonEmptyGroup):
		return fmt.Errorf("share group %q has members again (the broker answered NON_EMPTY_GROUP); nothing was reset: stop its consumers first", group)
	case err != nil:
		return requestError("setting share-partition start offsets", bootstrap, err)
	}
	var failed []string
	for _, o := range plan.Sorted() {
		err, ok := resps.Lookup(o.Topic, o.Partition)
		switch {
		case !ok:
			failed = append(failed, fmt.Sprintf("%s/%d: no answer", o.Topic, o.Partition))
		case err != nil:
			failed = append(failed, fmt.Sprintf("%s/%d: %v", o.Topic, o.Partition, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("resetting share group %q: %s", group, strings.Join(failed, "; "))
	}
	fmt.Fprintf(out, "Set %d share-partition start offsets for share group %s.\n", len(plan.Sorted()), group)
	return nil
}

// parseTopicPartitions parses TOPIC or TOPIC:P,P,... (nil partitions: all).
func parseTopicPartitions(s string) (string, []int32, error) {
	name, list, ok := strings.Cut(s, ":")
	if name == "" {
		return "", nil, fmt.Errorf("--topic %q: empty topic name", s)
	}
	if !ok {
		return name, nil, nil
	}
	var parts []int32
	for _, p := range strings.Split(list, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 32)
		if err != nil || n < 0 {
			return "", nil, fmt.Errorf("--topic %q: %q is not a partition number", s, p)
		}
		parts = append(parts, int32(n))
	}
	return name, parts, nil
}

// planReset computes the new offsets, refusing while the group has members
// (their commits would race ours, as kafka-consumer-groups.sh refuses).
func planReset(ctx context.Context, adm *kadm.Client, group string, wanted map[string][]int32, allTopics bool, spec resetSpec) (kadm.Offsets, error) {
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("describing group %q: %w", group, err)
	}
	if g, ok := described[group]; ok && g.Err == nil && len(g.Members) > 0 {
		return nil, fmt.Errorf("assignments can only be reset if the group %q is inactive, but the current state is %s", group, g.State)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("fetching committed offsets of %q: %w", group, err)
	}
	if allTopics {
		committed.Each(func(o kadm.OffsetResponse) {
			if o.Err == nil && o.At >= 0 {
				wanted[o.Topic] = append(wanted[o.Topic], o.Partition)
			}
		})
		if len(wanted) == 0 {
			return nil, fmt.Errorf("group %q has no committed offsets to reset", group)
		}
	}
	return planOffsets(ctx, adm, wanted, spec, func(t string, p int32) (int64, error) {
		c, ok := committed.Lookup(t, p)
		if !ok || c.At < 0 {
			return 0, fmt.Errorf("cannot shift %s/%d: the group has no committed offset there", t, p)
		}
		return c.At, nil
	})
}

// planShareReset computes new share-partition start offsets, refusing
// while the share group has members (the broker would too: only an
// empty share group's offsets may be altered).
func planShareReset(ctx context.Context, adm *kadm.Client, group string, wanted map[string][]int32, allTopics bool, spec resetSpec) (kadm.Offsets, error) {
	described, err := adm.DescribeShareGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("describing share group %q: %w", group, err)
	}
	if g, ok := described[group]; ok && g.Err == nil && len(g.Members) > 0 {
		return nil, fmt.Errorf("share group %q has %d members (state %s): offsets can only be reset while it is empty; stop its consumers first",
			group, len(g.Members), g.GroupState)
	}
	current, err := adm.DescribeShareGroupOffsets(ctx, group)
	if err == nil {
		err = current[group].Err
	}
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("describing the start offsets of share group %q: %w", group, err)
	}
	spso := current[group].Offsets
	if allTopics {
		for t, ps := range spso {
			for p, o := range ps {
				if o.Err == nil && o.StartOffset >= 0 {
					wanted[t] = append(wanted[t], p)
				}
			}
		}
		if len(wanted) == 0 {
			return nil, fmt.Errorf("share group %q has no share-partition state to reset", group)
		}
	}
	return planOffsets(ctx, adm, wanted, spec, func(t string, p int32) (int64, error) {
		o, ok := spso.Lookup(t, p)
		if !ok || o.Err != nil || o.StartOffset < 0 {
			return 0, fmt.Errorf("cannot shift %s/%d: the share group has no start offset there", t, p)
		}
		return o.StartOffset, nil
	})
}

// planOffsets computes the new offset of every wanted partition (a nil
// list: all of the topic's), clamped to the log; current is the group's
// position, for --shift-by.
func planOffsets(ctx context.Context, adm *kadm.Client, wanted map[string][]int32, spec resetSpec, current func(string, int32) (int64, error)) (kadm.Offsets, error) {
	names := make([]string, 0, len(wanted))
	for t := range wanted {
		names = append(names, t)
	}
	sort.Strings(names)
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	var byTime kadm.ListedOffsets
	if spec.toDatetime != "" {
		if byTime, err = adm.ListOffsetsAfterMilli(ctx, spec.at.UnixMilli(), names...); err != nil {
			return nil, fmt.Errorf("listing offsets by time: %w", err)
		}
	}
	var plan kadm.Offsets
	for _, t := range names {
		parts := wanted[t]
		if parts == nil {
			if _, ok := ends[t]; !ok {
				return nil, fmt.Errorf("topic %q does not exist", t)
			}
			for p := range ends[t] {
				parts = append(parts, p)
			}
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
		for _, p := range parts {
			s, sok := starts.Lookup(t, p)
			e, eok := ends.Lookup(t, p)
			if !sok || !eok || s.Err != nil || e.Err != nil {
				if isUnknownTopic(s.Err) || isUnknownTopic(e.Err) || !sok || !eok {
					return nil, fmt.Errorf("partition %s/%d does not exist", t, p)
				}
				return nil, fmt.Errorf("listing offsets of %s/%d: %v %v", t, p, s.Err, e.Err)
			}
			var at int64
			switch {
			case spec.earliest:
				at = s.Offset
			case spec.latest:
				at = e.Offset
			case spec.toOffsetSet:
				at = spec.toOffset
			case spec.shiftBySet:
				c, err := current(t, p)
				if err != nil {
					return nil, err
				}
				at = c + spec.shiftBy
			case spec.toDatetime != "":
				o, ok := byTime.Lookup(t, p)
				if !ok || o.Err != nil {
					return nil, fmt.Errorf("listing the offset of %s/%d at %s: %v", t, p, spec.toDatetime, o.Err)
				}
				at = o.Offset
				if at < 0 { // no record at or after the time
					at = e.Offset
				}
			}
			at = min(max(at, s.Offset), e.Offset)
			plan.Add(kadm.Offset{Topic: t, Partition: p, At: at, LeaderEpoch: -1})
		}
	}
	return plan, nil
}

// describeShareGroups prints share groups: state and members, then per
// partition the share-partition start offset and the lag (records from
// SPSO to the high watermark not yet acknowledged or archived).
func describeShareGroups(ctx context.Context, out io.Writer, adm *kadm.Client, names []string, all bool, bootstrap string) error {
	if all {
		listed, err := adm.ListGroupsByType(ctx, []string{"share"})
		if err != nil {
			return requestError("listing share groups", bootstrap, err)
		}
		names = listed.Groups()
		sort.Strings(names)
	}
	if len(names) == 0 {
		return nil
	}
	described, err := adm.DescribeShareGroups(ctx, names...)
	if err != nil {
		return requestError("describing share groups", bootstrap, err)
	}
	offsets, err := adm.DescribeShareGroupOffsets(ctx, names...)
	if err != nil {
		return requestError("describing share group offsets", bootstrap, err)
	}
	for i, name := range names {
		if i > 0 {
			fmt.Fprintln(out)
		}
		g, ok := described[name]
		switch {
		case !ok:
			return fmt.Errorf("describing share group %q: the broker did not answer for it", name)
		case g.Err != nil && errors.Is(g.Err, kerr.GroupIDNotFound):
			return fmt.Errorf("share group %q does not exist", name)
		case g.Err != nil:
			return fmt.Errorf("describing share group %q: %w", name, g.Err)
		}
		fmt.Fprintf(out, "GROUP %s  STATE %s  EPOCH %d  ASSIGNOR %s  MEMBERS %d\n", name, g.GroupState, g.GroupEpoch, orDash(g.Assignor), len(g.Members))
		tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tSTART-OFFSET\tLAG\tMEMBERS")
		holders := map[string]map[int32][]string{}
		for _, m := range g.Members {
			for topic, ps := range m.Assignment {
				for p := range ps {
					if holders[topic] == nil {
						holders[topic] = map[int32][]string{}
					}
					holders[topic][p] = append(holders[topic][p], m.ClientID)
				}
			}
		}
		o := offsets[name]
		if o.Err != nil {
			return fmt.Errorf("describing share group %q offsets: %w", name, o.Err)
		}
		topics := make([]string, 0, len(o.Offsets))
		for t := range o.Offsets {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		for _, t := range topics {
			ps := make([]int32, 0, len(o.Offsets[t]))
			for p := range o.Offsets[t] {
				ps = append(ps, p)
			}
			sort.Slice(ps, func(a, b int) bool { return ps[a] < ps[b] })
			for _, p := range ps {
				so := o.Offsets[t][p]
				lag := "-"
				if so.Lag >= 0 {
					lag = fmt.Sprint(so.Lag)
				}
				who := holders[t][p]
				sort.Strings(who)
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", t, p, so.StartOffset, lag, orDash(strings.Join(who, ",")))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
