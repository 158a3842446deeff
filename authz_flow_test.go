package exactly_test

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TestTransactionalFlowNeedsEveryACL: a transactional producer and a
// read_committed group consumer of User:alice — over SASL_SSL with
// SCRAM-SHA-512, and over SSL with a client certificate that maps to
// alice — work once the ACLs Kafka requires exist, and not while any one
// of them is missing. Each refused attempt leaves nothing behind: no
// record or marker, no committed group offset. franz-go fetches committed
// offsets with OffsetFetch v10, which names topics by ID only.
func TestTransactionalFlowNeedsEveryACL(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, _ := securedBroker(t, certs, "SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0", map[string]string{
		"ssl.client.auth":             "requested",
		"ssl.truststore.location":     certs.CAFile,
		"ssl.principal.mapping.rules": `RULE:^CN=(.*?),O=.*$/$1/,DEFAULT`,
		"authorizer.class.name":       "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":                 "User:admin",
	})
	ctx := context.Background()
	tlsCfg := certs.ClientConfig()
	adminCl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("SASL_SSL")), kgo.DialTLSConfig(tlsCfg),
		kgo.SASL(scram.Auth{User: "admin", Pass: "admin-secret"}.AsSha512Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer adminCl.Close()
	adm := kadm.NewClient(adminCl)
	altered, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: "alice", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: "alice-secret"}})
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatalf("creating alice: %v", err)
	}

	aliceCert := certs.Client(t, pkix.Name{CommonName: "alice", Organization: []string{"exactly"}})
	for i, via := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"SASL_SSL SCRAM-SHA-512", []kgo.Opt{kgo.SeedBrokers(b.ListenerAddr("SASL_SSL")), kgo.DialTLSConfig(tlsCfg),
			kgo.SASL(scram.Auth{User: "alice", Pass: "alice-secret"}.AsSha512Mechanism())}},
		{"SSL client certificate", []kgo.Opt{kgo.SeedBrokers(b.ListenerAddr("SSL")), kgo.DialTLSConfig(certs.ClientConfig(aliceCert))}},
	} {
		t.Run(via.name, func(t *testing.T) {
			suffix := strconv.Itoa(i)
			topic, txnID, group := "orders-"+suffix, "etl-"+suffix, "billing-"+suffix
			if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
				t.Fatal(err)
			}
			// Builders, not built ACLs: a delete filter mutates its builder.
			produceACLs := []func() *kadm.ACLBuilder{
				func() *kadm.ACLBuilder {
					return kadm.NewACLs().Allow("User:alice").TransactionalIDs(txnID).Operations(kadm.OpWrite)
				},
				func() *kadm.ACLBuilder {
					return kadm.NewACLs().Allow("User:alice").Topics(topic).Operations(kadm.OpWrite)
				},
			}
			consumeACLs := []func() *kadm.ACLBuilder{
				func() *kadm.ACLBuilder {
					return kadm.NewACLs().Allow("User:alice").Groups(group).Operations(kadm.OpRead)
				},
				func() *kadm.ACLBuilder {
					return kadm.NewACLs().Allow("User:alice").Topics(topic).Operations(kadm.OpRead)
				},
			}
			produce := func(first int) error {
				return transactionalProduce(ctx, topic, txnID, first, 10, via.opts...)
			}
			consume := func() ([]string, error) {
				return groupConsume(ctx, topic, group, 10, via.opts...)
			}

			// Nothing granted, then each producer ACL alone: refused with
			// the code of the ACL that is missing.
			wantCodes := []error{kerr.TransactionalIDAuthorizationFailed, kerr.TopicAuthorizationFailed, kerr.TransactionalIDAuthorizationFailed}
			for i, grantOnly := range []func() *kadm.ACLBuilder{nil, produceACLs[0], produceACLs[1]} {
				if grantOnly != nil {
					grant(t, adm, grantOnly())
				}
				if err := produce(0); !errors.Is(err, wantCodes[i]) {
					t.Errorf("producer with ACL set %d: %v, want %v", i, err, wantCodes[i])
				}
				if grantOnly != nil {
					revoke(t, adm, grantOnly())
				}
				requireEmpty(t, adm, topic)
			}
			for _, a := range produceACLs {
				grant(t, adm, a())
			}
			if err := produce(0); err != nil {
				t.Fatalf("producer with its ACLs: %v", err)
			}

			for i, grantOnly := range []func() *kadm.ACLBuilder{nil, consumeACLs[0], consumeACLs[1]} {
				if grantOnly != nil {
					grant(t, adm, grantOnly())
				}
				if got, err := consume(); err == nil {
					t.Errorf("consumer with ACL set %d read %d records", i, len(got))
				}
				if grantOnly != nil {
					revoke(t, adm, grantOnly())
				}
				requireNoGroupOffsets(t, adm, group)
			}
			for _, a := range consumeACLs {
				grant(t, adm, a())
			}
			got, err := consume()
			if err != nil {
				t.Fatalf("consumer with its ACLs: %v", err)
			}
			if slices.Sort(got); !slices.Equal(got, valuesFrom(0, 10)) {
				t.Fatalf("consumer read %v", got)
			}
			offsets, err := adm.FetchOffsets(ctx, group)
			if err != nil {
				t.Fatal(err)
			}
			var committed int64
			offsets.Each(func(o kadm.OffsetResponse) { committed += o.At })
			if committed == 0 {
				t.Fatal("the authorized consumer committed no offsets")
			}
		})
	}
}

// transactionalProduce writes n records numbered from first in one
// transaction as a fresh producer with txnID, and commits.
func transactionalProduce(ctx context.Context, topic, txnID string, first, n int, opts ...kgo.Opt) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.TransactionalID(txnID), kgo.DefaultProduceTopic(topic),
		kgo.RequestRetries(1), kgo.RetryTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	rs := make([]*kgo.Record, 0, n)
	for _, v := range valuesFrom(first, n) {
		rs = append(rs, &kgo.Record{Value: []byte(v)})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return errors.Join(err, cl.EndTransaction(ctx, kgo.TryAbort))
	}
	return cl.EndTransaction(ctx, kgo.TryCommit)
}

// groupConsume reads want records as a read_committed member of group
// and commits them; an error when the group or the fetches fail, or
// when fewer arrive within 30 s.
//
// A refused consumer may close between being handed a member id (KIP-394's
// MEMBER_ID_REQUIRED) and joining with it; like Kafka's, the group then
// holds its next join phase until that id's session times out. So every
// consumer here has the broker's minimum session timeout (6 s), and the
// allowed 30 s covers that wait plus the 3 s initial rebalance delay on a
// loaded machine; refused consumers fail at once and never wait for it.
func groupConsume(ctx context.Context, topic, group string, want int, opts ...kgo.Opt) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(6 * time.Second), kgo.DisableAutoCommit(), kgo.RequestRetries(1)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var got []string
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got, fmt.Errorf("%d of %d records: %w", len(got), want, ctx.Err())
		}
		if err := fs.Err0(); err != nil {
			return got, err
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got, cl.CommitUncommittedOffsets(ctx)
}

// revoke deletes the ACLs b describes.
func revoke(t *testing.T, adm *kadm.Client, b *kadm.ACLBuilder) {
	t.Helper()
	res, err := adm.DeleteACLs(context.Background(), b.AllowHosts())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("deleting ACL: %v", r.Err)
		}
	}
}

// requireEmpty fails unless topic holds nothing at all: no record and
// no transaction marker (a refused producer added no partition).
func requireEmpty(t *testing.T, adm *kadm.Client, topic string) {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset != 0 {
			t.Errorf("%s/%d ends at %d after refused producers, want 0", topic, o.Partition, o.Offset)
		}
	})
}

// requireNoGroupOffsets fails if group has committed any offset.
func requireNoGroupOffsets(t *testing.T, adm *kadm.Client, group string) {
	t.Helper()
	offsets, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	offsets.Each(func(o kadm.OffsetResponse) {
		t.Errorf("group %s has a committed offset after a refused consumer: %+v", group, o)
	})
}

// valuesFrom is n record values counting from first, in the order
// strings sort (zero-padded).
func valuesFrom(first, n int) []string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = fmt.Sprintf("%06d", first+i)
	}
	return vs
}
