package broker

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeGroups, the classic API, answers a share group as Kafka does for
// any group that is not classic: Dead, and from v6 GROUP_ID_NOT_FOUND
// (KIP-1043); ShareGroupDescribe is the API that describes it. The group
// is not created or changed by being asked about.
func TestDescribeGroupsOfShareGroup(t *testing.T) {
	b := memBroker(t, nil, nil)
	if _, err := b.createTopic("m", 1, nil); err != nil {
		t.Fatal(err)
	}
	handle := func(req kmsg.Request) kmsg.Response { return handleDirect(b, req) }
	alter := kmsg.NewPtrAlterShareGroupOffsetsRequest()
	alter.GroupID = "workers"
	alter.Topics = []kmsg.AlterShareGroupOffsetsRequestTopic{{Topic: "m", Partitions: []kmsg.AlterShareGroupOffsetsRequestTopicPartition{{Partition: 0, StartOffset: 0}}}}
	if resp := handle(alter).(*kmsg.AlterShareGroupOffsetsResponse); resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("AlterShareGroupOffsets: %+v", resp)
	}
	for _, v := range []int16{5, 6} {
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Version = v
		req.Groups = []string{"workers"}
		resp := handle(req).(*kmsg.DescribeGroupsResponse)
		g := resp.Groups[0]
		want := int16(0)
		if v >= 6 {
			want = kerr.GroupIDNotFound.Code
		}
		if g.State != "Dead" || g.ErrorCode != want || len(g.Members) != 0 {
			t.Errorf("DescribeGroups v%d of a share group: state %q, error %v, %d members; want Dead, %v",
				v, g.State, kerr.ErrorForCode(g.ErrorCode), len(g.Members), kerr.ErrorForCode(want))
		}
	}
	desc := kmsg.NewPtrShareGroupDescribeRequest()
	desc.GroupIDs = []string{"workers"}
	if g := handle(desc).(*kmsg.ShareGroupDescribeResponse).Groups[0]; g.ErrorCode != 0 || g.GroupState != "Empty" {
		t.Errorf("ShareGroupDescribe after DescribeGroups: state %q, error %v", g.GroupState, kerr.ErrorForCode(g.ErrorCode))
	}
}
