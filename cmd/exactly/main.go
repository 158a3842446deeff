// Command exactly is the exactly binary: the broker (`exactly serve`) and
// the client tools (topic, produce, consume, ...) in one executable.
package main

import (
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
	root.AddCommand(serveCommand(), cli.TopicCommand(), cli.ProduceCommand(), cli.ConsumeCommand(), cli.TxnCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "exactly:", err)
		os.Exit(1)
	}
}
