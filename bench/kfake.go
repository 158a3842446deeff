package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/exactly/exactly/internal/managed"
)

// Names of the kfake targets Config.KFake and Config.KFakeDurable add.
const (
	KFakeTarget        = "kfake"
	KFakeDurableTarget = "kfake-durable"
)

// startKFakes starts the kfake brokers the config asks for, each a child
// process (Config.KFakeCommand) so that its CPU time is its own and its
// garbage collector never shares a heap with the client's, exactly as the
// managed exactly broker. Its data and log go under Config.Dir/<name>, or
// a temporary directory removed by stop.
func startKFakes(cfg Config) (targets []Target, stop func(), err error) {
	base, temp := cfg.Dir, false
	if base == "" {
		if base, err = os.MkdirTemp("", "exactly-bench-kfake-"); err != nil {
			return nil, nil, err
		}
		temp = true
	}
	var brokers []*managed.Broker
	stop = func() {
		for _, br := range brokers {
			br.Stop(10 * time.Second)
		}
		if temp {
			os.RemoveAll(base)
		}
	}
	for _, k := range []struct {
		want bool
		name string
		args []string
	}{{cfg.KFake, KFakeTarget, nil}, {cfg.KFakeDurable, KFakeDurableTarget, []string{"--durable"}}} {
		if !k.want {
			continue
		}
		br, err := managed.Start(append(slices.Clone(cfg.KFakeCommand), k.args...), nil, filepath.Join(base, k.name), nil)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("starting %s: %w", k.name, err)
		}
		brokers = append(brokers, br)
		targets = append(targets, Target{Name: k.name, Bootstrap: []string{br.Addr()}, PID: br.PID()})
	}
	return targets, stop, nil
}
