package hostile

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// staticBrokerConfig is what the operator fixed for TestStateStaticConfigs;
// every key is read-only in Kafka.
var staticBrokerConfig = map[string]string{
	"delete.topic.enable":       "false",
	"auto.create.topics.enable": "false",
	"num.partitions":            "1",
}

// attackFlipStaticConfigs tries to flip read-only broker keys at runtime,
// incrementally and with a whole-set AlterConfigs, cluster-wide and for
// this broker, and checks each attempt is refused with INVALID_REQUEST.
func attackFlipStaticConfigs(t *testing.T, tg target) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := adminClient(t, tg)
	flips := []kadm.AlterConfig{
		{Name: "delete.topic.enable", Value: kadm.StringPtr("true")},
		{Name: "auto.create.topics.enable", Value: kadm.StringPtr("true")},
		{Name: "num.partitions", Value: kadm.StringPtr("100000")},
	}
	for _, flip := range flips {
		for _, alter := range []func() (kadm.AlterConfigsResponses, error){
			func() (kadm.AlterConfigsResponses, error) {
				return adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{flip})
			},
			func() (kadm.AlterConfigsResponses, error) {
				return adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{flip}, 0)
			},
			func() (kadm.AlterConfigsResponses, error) {
				return adm.AlterBrokerConfigsState(ctx, []kadm.AlterConfig{flip})
			},
		} {
			resps, err := alter()
			if err != nil {
				t.Fatalf("altering %s: %v", flip.Name, err)
			}
			for _, r := range resps {
				if !errors.Is(r.Err, kerr.InvalidRequest) {
					t.Errorf("setting %s=%s at runtime: %v (%s), want INVALID_REQUEST", flip.Name, *flip.Value, r.Err, r.ErrMessage)
				}
			}
		}
	}
}

// Read-only broker keys cannot be flipped by a client: every attempt is
// INVALID_REQUEST, the operator's values still hold (a topic cannot be
// deleted, DescribeConfigs reports them read-only and static), and a
// dynamic key still changes. Before the fix the attack succeeded and the
// topic was deleted.
func TestStateStaticConfigs(t *testing.T) {
	b := startBroker(t, staticBrokerConfig)
	createTopic(t, plaintext(b.Addr()), "kept", 1)
	attackFlipStaticConfigs(t, plaintext(b.Addr()))

	ctx := t.Context()
	adm := adminClient(t, plaintext(b.Addr()))
	del, err := adm.DeleteTopics(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if r := del["kept"]; !errors.Is(r.Err, kerr.TopicDeletionDisabled) {
		t.Errorf("deleting a topic after the attack: %v, want TOPIC_DELETION_DISABLED", r.Err)
	}
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType = kmsg.ConfigResourceTypeBroker
	rr.ResourceName = "0"
	req.Resources = append(req.Resources, rr)
	resp := testenv.DialRaw(t, b.Addr()).Request(req, 4).(*kmsg.DescribeConfigsResponse)
	for _, c := range resp.Resources[0].Configs {
		if want, ok := staticBrokerConfig[c.Name]; ok {
			if *c.Value != want || !c.ReadOnly || c.Source != kmsg.ConfigSourceStaticBrokerConfig {
				t.Errorf("%s = %q read_only=%v source=%v, want %q read-only from the static config", c.Name, *c.Value, c.ReadOnly, c.Source, want)
			}
		}
		if c.Name == "log.retention.ms" && c.ReadOnly {
			t.Errorf("log.retention.ms reported read-only; Kafka updates it cluster-wide")
		}
	}
	resps, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "log.retention.ms", Value: kadm.StringPtr("3600000")}})
	if err != nil || resps[0].Err != nil {
		t.Fatalf("a dynamic key: %v %v", err, resps)
	}
	canary(t, plaintext(b.Addr()), 20)
}
