package share

// What the broker's metrics endpoint reports of share groups: counters of
// record transitions (each partition counts its own, collected here at
// scrape time, so the hot paths only increment a field under the lock
// they hold anyway) and each group's in-flight records.

// Stats are counts of share-partition record transitions since the
// coordinator started.
type Stats struct {
	// Acquired counts records handed out by ShareFetch (every delivery),
	// Redelivered those with a delivery count above 1.
	Acquired, Redelivered int64
	// Accepted, Released, Rejected and Renewed count acknowledged records
	// by acknowledgement type.
	Accepted, Released, Rejected, Renewed int64
	// LockExpired counts acquisitions whose lock expired before an
	// acknowledgement (the record became Available again, or Archived).
	LockExpired int64
	// Archived counts records archived at group.share.delivery.count.limit
	// (released or expired after their last allowed delivery); rejected
	// records are in Rejected.
	Archived int64
}

// GroupRecords is one share group's in-flight records — the windows of
// its share partitions, [SPSO, SPEO) — by state.
type GroupRecords struct {
	Group string
	Counts
}

// Metrics returns the counters and every share group's in-flight records
// (groups with share-partition state), sorted by group.
func (c *Coordinator) Metrics() (Stats, []GroupRecords) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byGroup := map[string]*GroupRecords{}
	for k, p := range c.parts {
		c.collectLocked(p)
		g := byGroup[k.Group]
		if g == nil {
			g = &GroupRecords{Group: k.Group}
			byGroup[k.Group] = g
		}
		n := p.Counts()
		g.Available += n.Available
		g.Acquired += n.Acquired
		g.Acknowledged += n.Acknowledged
		g.Archived += n.Archived
	}
	e := c.collected
	st := Stats{Acquired: e.acquired, Redelivered: e.redelivered,
		Accepted: e.acked[AckAccept], Released: e.acked[AckRelease], Rejected: e.acked[AckReject], Renewed: e.acked[AckRenew],
		LockExpired: e.lockExpired, Archived: e.archived}
	groups := make([]GroupRecords, 0, len(byGroup))
	for _, name := range sortedKeys(byGroup) {
		groups = append(groups, *byGroup[name])
	}
	return st, groups
}

// collectLocked moves p's events into the coordinator's totals.
func (c *Coordinator) collectLocked(p *Partition) {
	c.collected.add(p.ev)
	p.ev = events{}
}

// dropPartLocked forgets a share partition's state, keeping its counts.
func (c *Coordinator) dropPartLocked(k partitionKey) {
	if p := c.parts[k]; p != nil {
		c.collectLocked(p)
	}
	delete(c.parts, k)
}
