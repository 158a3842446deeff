package cli

// exactly format: prepare a cluster node's data directory.

import (
	"fmt"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/spf13/cobra"
)

// FormatCommand returns the "format" command, Kafka's storage format: it
// writes meta.properties with a cluster id and node id into an empty data
// directory. Nodes started with `exactly serve` alone derive their cluster
// id from controller.quorum.voters; format gives a cluster an id of its
// own (the same on every node), or lets new nodes join a cluster grown
// from a single node (its id: `exactly cluster info`).
func FormatCommand() *cobra.Command {
	var (
		dataDir, clusterID string
		nodeID             int32
	)
	cmd := &cobra.Command{
		Use:   "format --data-dir DIR --cluster-id ID --node-id N",
		Short: "Write a cluster id and node id into an empty data directory (like kafka-storage.sh format)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodeID < 1 {
				return fmt.Errorf("--node-id is required (a positive node id, the node's node.id)")
			}
			if clusterID == "" {
				clusterID = cluster.NewClusterID()
			}
			silenceUsageOnRun(cmd)
			if err := cluster.Format(vfs.OS(), dataDir, clusterID, nodeID); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Formatted %s: cluster.id=%s node.id=%d\n", dataDir, clusterID, nodeID)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "./data", "the data directory (log.dirs)")
	cmd.Flags().StringVar(&clusterID, "cluster-id", "", "the cluster id (default: a new random one, printed)")
	cmd.Flags().Int32Var(&nodeID, "node-id", 0, "the node's node.id")
	return cmd
}
