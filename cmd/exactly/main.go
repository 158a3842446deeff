// Command exactly is the exactly binary: the broker (`exactly serve`) and
// the client tools (topic, produce, consume, ...) in one executable.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/exactly/exactly/internal/cli"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "exactly",
		Short:         "A durable Kafka-compatible broker and tools that make delivery guarantees provable",
		SilenceErrors: true,
	}
	root.AddCommand(serveCommand(), cli.TopicCommand(), cli.QuotaCommand(), cli.ProduceCommand(), cli.ConsumeCommand(), cli.GroupCommand(), cli.TxnCommand(), cli.VerifyCommand(), cli.BenchCommand(), cli.KFakeCommand(), cli.OutboxCommand(), cli.UserCommand(), cli.ACLCommand(), cli.CheckDataCommand(), cli.ClusterCommand(), cli.FormatCommand())
	if err := root.Execute(); err != nil {
		// A command that needs a particular exit status (verify: 1 for a
		// violated guarantee, 2 for a setup error) says so.
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, "exactly:", msg)
			}
			os.Exit(coded.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "exactly:", err)
		os.Exit(1)
	}
}
