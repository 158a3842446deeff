package cli

// exactly cluster: a cluster's nodes and its metadata quorum.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ClusterCommand returns the "cluster" command: info (the brokers and the
// controller), status (the metadata quorum: leader, term, each voter's
// lag, like kafka-metadata-quorum.sh describe --status/--replication),
// add-voter and remove-voter (KIP-853).
func ClusterCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show a cluster's nodes and metadata quorum; add and remove voters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(clusterInfoCommand(f), clusterStatusCommand(f), clusterAddVoterCommand(f), clusterRemoveVoterCommand(f))
	return cmd
}

func clusterInfoCommand(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the cluster id, the controller and every broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				m, err := adm.BrokerMetadata(ctx)
				if err != nil {
					return requestError("reading metadata", f.bootstrap, err)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "Cluster id: %s\nController: %s\n", m.Cluster, nodeName(m.Controller))
				tw := newTable(out, "NodeId", "Host", "Port", "Rack")
				for _, b := range m.Brokers {
					rack := "-"
					if b.Rack != nil {
						rack = *b.Rack
					}
					row(tw, b.NodeID, b.Host, b.Port, rack)
				}
				return tw.Flush()
			})
		},
	}
}

func nodeName(id int32) string {
	if id < 0 {
		return "none"
	}
	return strconv.Itoa(int(id))
}

// describeQuorum asks the controller (the quorum's leader, the only node
// that knows each voter's progress) for the quorum's state.
func describeQuorum(ctx context.Context, cl *kgo.Client, adm *kadm.Client) (*kmsg.DescribeQuorumResponse, error) {
	m, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return nil, err
	}
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rt.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
	req.Topics = append(req.Topics, rt)
	var resp *kmsg.DescribeQuorumResponse
	if m.Controller >= 0 {
		resp, err = req.RequestWith(ctx, cl.Broker(int(m.Controller)))
	} else {
		resp, err = req.RequestWith(ctx, cl)
	}
	if err != nil {
		return nil, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, err
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return nil, errors.New("the broker answered for no metadata quorum")
	}
	if err := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, errors.New("the broker is a single node: it has no metadata quorum")
		}
		return nil, err
	}
	return resp, nil
}

func clusterStatusCommand(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the metadata quorum: leader, term, commit index, each voter's and observer's lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, cl *kgo.Client, adm *kadm.Client) error {
				resp, err := describeQuorum(ctx, cl, adm)
				if err != nil {
					return requestError("describing the metadata quorum", f.bootstrap, err)
				}
				p := resp.Topics[0].Partitions[0]
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "LeaderId: %s\nLeaderEpoch: %d\nHighWatermark: %d\n", nodeName(p.LeaderID), p.LeaderEpoch, p.HighWatermark)
				tw := newTable(out, "NodeId", "DirectoryId", "LogEndOffset", "Lag", "Status")
				replica := func(r kmsg.DescribeQuorumResponseTopicPartitionReplicaState, status string) {
					leo, lag := "-", "-"
					if r.LogEndOffset >= 0 { // only the leader knows it
						leo = strconv.FormatInt(r.LogEndOffset, 10)
						lag = strconv.FormatInt(max(p.HighWatermark-r.LogEndOffset, 0), 10)
					}
					dir := "-"
					if r.ReplicaDirectoryID != ([16]byte{}) {
						dir = hex.EncodeToString(r.ReplicaDirectoryID[:])
					}
					row(tw, r.ReplicaID, dir, leo, lag, status)
				}
				for _, v := range p.CurrentVoters {
					status := "Follower"
					if v.ReplicaID == p.LeaderID {
						status = "Leader"
					}
					replica(v, status)
				}
				for _, o := range p.Observers {
					replica(o, "Observer")
				}
				return tw.Flush()
			})
		},
	}
}

func clusterAddVoterCommand(f *adminFlags) *cobra.Command {
	var (
		id         int32
		controller string
	)
	cmd := &cobra.Command{
		Use:   "add-voter --node-id N --controller host:port",
		Short: "Add a running node (started with serve --join) to the metadata quorum's voters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, portStr, err := net.SplitHostPort(controller)
			port, perr := strconv.Atoi(portStr)
			if err != nil || perr != nil || port <= 0 || port > 65535 {
				return fmt.Errorf("--controller %q: want the new node's controller listener as host:port", controller)
			}
			if id < 1 {
				return errors.New("--node-id is required (a positive node id)")
			}
			return f.withAdmin(cmd, func(ctx context.Context, cl *kgo.Client, _ *kadm.Client) error {
				req := kmsg.NewPtrAddRaftVoterRequest()
				req.VoterID = id
				req.TimeoutMillis = int32(f.requestTimeout.Milliseconds())
				l := kmsg.NewAddRaftVoterRequestListener()
				l.Name, l.Host, l.Port = "CONTROLLER", host, uint16(port)
				req.Listeners = append(req.Listeners, l)
				resp, err := req.RequestWith(ctx, cl)
				if err != nil {
					return requestError("adding a voter", f.bootstrap, err)
				}
				if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
					return fmt.Errorf("adding voter %d: %w%s", id, err, messageSuffix(resp.ErrorMessage))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Added voter %d (%s).\n", id, controller)
				return nil
			})
		},
	}
	cmd.Flags().Int32Var(&id, "node-id", 0, "the new voter's node.id")
	cmd.Flags().StringVar(&controller, "controller", "", "the new voter's controller listener, host:port")
	return cmd
}

func clusterRemoveVoterCommand(f *adminFlags) *cobra.Command {
	var (
		id    int32
		dirID string
	)
	cmd := &cobra.Command{
		Use:   "remove-voter --node-id N",
		Short: "Remove a node from the metadata quorum's voters (before it rejoins with a wiped disk)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id < 1 {
				return errors.New("--node-id is required (a positive node id)")
			}
			req := kmsg.NewPtrRemoveRaftVoterRequest()
			req.VoterID = id
			if dirID != "" {
				raw, err := hex.DecodeString(dirID)
				if err != nil || len(raw) != 16 {
					return fmt.Errorf("--directory-id %q: want the 32 hex digits `exactly cluster status` shows", dirID)
				}
				copy(req.VoterDirectoryID[:], raw)
			}
			return f.withAdmin(cmd, func(ctx context.Context, cl *kgo.Client, _ *kadm.Client) error {
				resp, err := req.RequestWith(ctx, cl)
				if err != nil {
					return requestError("removing a voter", f.bootstrap, err)
				}
				if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
					return fmt.Errorf("removing voter %d: %w%s", id, err, messageSuffix(resp.ErrorMessage))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Removed voter %d.\n", id)
				return nil
			})
		},
	}
	cmd.Flags().Int32Var(&id, "node-id", 0, "the voter's node.id")
	cmd.Flags().StringVar(&dirID, "directory-id", "", "only if the voter's directory id is this one (hex, from exactly cluster status)")
	return cmd
}

func messageSuffix(msg *string) string {
	if msg == nil || *msg == "" {
		return ""
	}
	return ": " + *msg
}
