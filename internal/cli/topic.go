package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TopicCommand returns the "topic" command and its subcommands create, list,
// describe, delete and alter-config, which administer topics on the brokers
// named by --bootstrap-server.
func TopicCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Create, list, describe, delete and configure topics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(
		topicCreateCommand(f),
		topicListCommand(f),
		topicDescribeCommand(f),
		topicDeleteCommand(f),
		topicAlterConfigCommand(f),
	)
	return cmd
}

func topicCreateCommand(f *adminFlags) *cobra.Command {
	var (
		partitions  int32
		replication int16
		configs     []string
		ifNotExists bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a topic",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if partitions == 0 || partitions < -1 {
				return fmt.Errorf("invalid --partitions %d: must be at least 1 (or -1 for the broker default)", partitions)
			}
			if replication == 0 || replication < -1 {
				return fmt.Errorf("invalid --replication-factor %d: must be at least 1 (or -1 for the broker default)", replication)
			}
			cfgs := make(map[string]*string, len(configs))
			for _, c := range configs {
				k, v, err := parseKeyValue("--config", c)
				if err != nil {
					return err
				}
				cfgs[k] = kadm.StringPtr(v)
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				resps, err := adm.CreateTopics(ctx, partitions, replication, cfgs, name)
				if err != nil {
					return requestError("creating topic", f.bootstrap, err)
				}
				r, ok := resps[name]
				if !ok {
					return fmt.Errorf("creating topic %q: the broker did not answer for it", name)
				}
				if r.Err != nil {
					if ifNotExists && errors.Is(r.Err, kerr.TopicAlreadyExists) {
						return nil
					}
					return topicError("creating topic", name, r.Err, r.ErrMessage)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Created topic %s.\n", name)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.Int32Var(&partitions, "partitions", -1, "number of partitions (-1: broker default)")
	fl.Int16Var(&replication, "replication-factor", -1, "replicas per partition (-1: broker default)")
	fl.StringArrayVar(&configs, "config", nil, "topic config override key=value (repeatable)")
	fl.BoolVar(&ifNotExists, "if-not-exists", false, "succeed without change if the topic already exists")
	return cmd
}

func topicListCommand(f *adminFlags) *cobra.Command {
	var internal bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List topic names",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				var err error
				var tds kadm.TopicDetails
				if internal {
					tds, err = adm.ListTopicsWithInternal(ctx)
				} else {
					tds, err = adm.ListTopics(ctx)
				}
				if err != nil {
					return requestError("listing topics", f.bootstrap, err)
				}
				out := cmd.OutOrStdout()
				for _, name := range tds.Names() {
					fmt.Fprintln(out, name)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&internal, "include-internal", false, "also list internal topics")
	return cmd
}

func topicDescribeCommand(f *adminFlags) *cobra.Command {
	var ifExists bool
	cmd := &cobra.Command{
		Use:   "describe [NAME...]",
		Short: "Show partitions, leaders, replicas, ISR and non-default configs of topics",
		Long: "Show partitions, leaders, replicas, ISR and the configs set on the topic\n" +
			"(those that differ from the broker defaults). Without names, describes every topic.",
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				names := dedupe(args)
				tds, err := adm.ListTopics(ctx, names...)
				if err != nil {
					return requestError("describing topics", f.bootstrap, err)
				}
				if len(names) == 0 {
					names = tds.Names()
				}
				var errs []error
				var found []string
				for _, name := range names {
					td, ok := tds[name]
					switch {
					case !ok || isUnknownTopic(td.Err):
						if !ifExists {
							errs = append(errs, fmt.Errorf("topic %q does not exist", name))
						}
					case td.Err != nil:
						errs = append(errs, topicError("describing topic", name, td.Err, ""))
					default:
						found = append(found, name)
					}
				}
				configs := map[string][]string{}
				policies := map[string]string{}
				if len(found) > 0 {
					rcs, err := adm.DescribeTopicConfigs(ctx, found...)
					if err != nil {
						return requestError("describing topic configs", f.bootstrap, err)
					}
					for _, rc := range rcs {
						if rc.Err != nil {
							errs = append(errs, topicError("describing configs of topic", rc.Name, rc.Err, rc.ErrMessage))
							continue
						}
						configs[rc.Name] = overriddenConfigs(rc.Configs)
						for _, c := range rc.Configs {
							if c.Key == "cleanup.policy" {
								policies[rc.Name] = c.MaybeValue()
							}
						}
					}
				}
				out := cmd.OutOrStdout()
				for _, name := range found {
					writeTopicDescription(out, tds[name], policies[name], configs[name])
				}
				return errors.Join(errs...)
			})
		},
	}
	cmd.Flags().BoolVar(&ifExists, "if-exists", false, "skip named topics that do not exist instead of failing")
	return cmd
}

// overriddenConfigs returns "key=value" for every config set on the topic
// itself, sorted by key: those are the ones that differ from the defaults.
func overriddenConfigs(cs []kadm.Config) []string {
	var out []string
	for _, c := range cs {
		if c.Source != kmsg.ConfigSourceDynamicTopicConfig {
			continue
		}
		v := c.MaybeValue()
		if c.Sensitive {
			v = "(sensitive)"
		}
		out = append(out, c.Key+"="+v)
	}
	sort.Strings(out)
	return out
}

// writeTopicDescription prints a topic summary line followed by one line
// per partition, tab separated. The summary names the effective
// cleanup.policy (delete, compact or both) even when it is the broker's
// default, since it decides what a consumer may find missing.
func writeTopicDescription(w io.Writer, td kadm.TopicDetail, policy string, configs []string) {
	parts := td.Partitions.Sorted()
	rf := 0
	if len(parts) > 0 {
		rf = len(parts[0].Replicas)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Topic: %s", td.Topic)
	if td.ID != (kadm.TopicID{}) {
		fmt.Fprintf(&b, "\tTopicId: %s", td.ID)
	}
	fmt.Fprintf(&b, "\tPartitionCount: %d\tReplicationFactor: %d", len(parts), rf)
	if policy != "" {
		fmt.Fprintf(&b, "\tCleanupPolicy: %s", policy)
	}
	fmt.Fprintf(&b, "\tConfigs: %s\n", strings.Join(configs, ","))
	for _, p := range parts {
		fmt.Fprintf(&b, "\tTopic: %s\tPartition: %d\tLeader: %s\tReplicas: %s\tIsr: %s",
			td.Topic, p.Partition, leaderString(p.Leader), joinInt32(p.Replicas), joinInt32(p.ISR))
		if len(p.OfflineReplicas) > 0 {
			fmt.Fprintf(&b, "\tOffline: %s", joinInt32(p.OfflineReplicas))
		}
		if p.Err != nil {
			fmt.Fprintf(&b, "\tError: %v", p.Err)
		}
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

func leaderString(l int32) string {
	if l < 0 {
		return "none"
	}
	return strconv.Itoa(int(l))
}

func joinInt32(s []int32) string {
	strs := make([]string, len(s))
	for i, v := range s {
		strs[i] = strconv.Itoa(int(v))
	}
	return strings.Join(strs, ",")
}

// dedupe returns s without repeated elements, keeping the first occurrence.
func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func topicDeleteCommand(f *adminFlags) *cobra.Command {
	var ifExists bool
	cmd := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete topics",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				names := dedupe(args)
				resps, err := adm.DeleteTopics(ctx, names...)
				if err != nil {
					return requestError("deleting topics", f.bootstrap, err)
				}
				out := cmd.OutOrStdout()
				var errs []error
				for _, name := range names {
					r, ok := resps[name]
					switch {
					case !ok:
						errs = append(errs, fmt.Errorf("deleting topic %q: the broker did not answer for it", name))
					case r.Err == nil:
						fmt.Fprintf(out, "Deleted topic %s.\n", name)
					case isUnknownTopic(r.Err) && ifExists:
					default:
						errs = append(errs, topicError("deleting topic", name, r.Err, r.ErrMessage))
					}
				}
				return errors.Join(errs...)
			})
		},
	}
	cmd.Flags().BoolVar(&ifExists, "if-exists", false, "succeed for topics that do not exist")
	return cmd
}

func topicAlterConfigCommand(f *adminFlags) *cobra.Command {
	var (
		sets, deletes []string
		ifExists      bool
	)
	cmd := &cobra.Command{
		Use:   "alter-config NAME --set key=value ... --delete key ...",
		Short: "Incrementally set or delete topic config overrides",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var alters []kadm.AlterConfig
			for _, s := range sets {
				k, v, err := parseKeyValue("--set", s)
				if err != nil {
					return err
				}
				alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(v)})
			}
			for _, k := range deletes {
				if k == "" || strings.Contains(k, "=") {
					return fmt.Errorf("invalid --delete %q: expected a config name", k)
				}
				alters = append(alters, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
			}
			if len(alters) == 0 {
				return errors.New("nothing to change: give at least one --set or --delete")
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				resps, err := adm.AlterTopicConfigs(ctx, alters, name)
				if err != nil {
					return requestError("altering topic config", f.bootstrap, err)
				}
				r, err := resps.On(name, nil)
				if err != nil {
					return fmt.Errorf("altering config of topic %q: the broker did not answer for it", name)
				}
				if r.Err != nil {
					if ifExists && isUnknownTopic(r.Err) {
						return nil
					}
					return topicError("altering config of topic", name, r.Err, r.ErrMessage)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Updated config of topic %s.\n", name)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&sets, "set", nil, "config to set, key=value (repeatable)")
	fl.StringArrayVar(&deletes, "delete", nil, "config override to remove, back to the default (repeatable)")
	fl.BoolVar(&ifExists, "if-exists", false, "succeed without change if the topic does not exist")
	return cmd
}
