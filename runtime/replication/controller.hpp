// controller: elects a new leader for a replica group whose node is gone
// (issue 13, CLUSTER.md phase 2: failover). One per node with replication;
// only the holder of the cluster's `controller` duty acts:
//
//   /edda/<cluster>/owners/controller   claimed through an owner table
//                                       (cluster/owner_table.hpp), bound to
//                                       the holder's lease; its
//                                       create_revision is the token
//
// Every 500 ms the holder lists the group records and the members. A group
// whose record allows it (`failover`, the leader's cluster.failover =
// auto) and that no member serves (its member key is gone: the lease
// expired or was revoked) gets a new leader: the controller asks each
// live node of the recorded in-sync set where its copy is (ReplAck over
// the cluster links), takes the copy of the record's log with the highest
// (epoch, seq) that is not unfinished, and writes the record with `host` =
// that node, the epoch raised by one, the in-sync set = that node and the
// other in-sync copies that answered (each has every acknowledged write),
// and `elected_by` = its token, by a compare-and-swap guarded by its
// ownership key (a controller that lost the duty, after a pause or a
// partition, cannot write with its old token) and by the group's member
// key being still absent (a node that rejoined meanwhile keeps its group).
// The elected node then serves the group from its copy
// (node/hosting.hpp). One that has not while the group was unserved for
// `host_wait` is passed over.
//
// `edda cluster elect G --unclean --by WHO` (ElectRequest, to any node's
// controller): recorded in G's record (`unclean_by`); when no in-sync copy
// is on a live node, the holder then takes every live node's copy of the
// log as a candidate, elects the one with the most writes, records
// `unclean` and who asked, logs an ERROR and raises the alert
// `unclean_election` (writes acknowledged after that copy are lost). The
// request is answered once the record shows the election (at most 12 s).
//
// No election: a group seen unserved for less than `grace` (by this
// holder: a new holder starts counting anew), or, if its node stopped
// cleanly (`stopped_ms` in the record), for less than `restart_wait`; a group whose node serves it; one whose elected host is a
// live member (it is starting the group); one with no in-sync copy on a
// live node (said once: it waits for its node, since an out-of-sync copy
// may lack acknowledged writes). A failed CAS (the record changed: the
// node came back, or its in-sync set changed) is tried again on the next
// round with what is then recorded.
#pragma once

#include "base/alerts.hpp"
#include "coord/coord.hpp"

#include <caf/actor.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace edda::replication {

struct controller_options {
  coord::client_ptr store;
  std::string cluster_name;
  std::string node_id;
  caf::actor cluster; ///< the node's cluster actor (views, links)
  std::chrono::milliseconds period{500};
  /// A group is elected anew only once this holder has seen it unserved
  /// for this long: after an etcd outage every lease may have expired at
  /// once, and live nodes rejoin within a renewal period (TTL/4); they
  /// must not lose their groups for it. The node uses TTL/4 + 500 ms.
  std::chrono::milliseconds grace{1000};
  /// An elected node that has not served the group this long after the
  /// election (its copy turned out unusable, its start keeps failing) is
  /// passed over: another in-sync copy is elected.
  std::chrono::milliseconds host_wait{30000};
  /// A group whose node stopped cleanly (its record's `stopped_ms`) is
  /// elected only once unserved this long: time for a restart.
  std::chrono::milliseconds restart_wait{30000};
  /// Raised on an unclean election (may be null).
  std::shared_ptr<alert_sink> alerts;
  /// How long a position query may take before that copy is left out of
  /// the round.
  std::chrono::milliseconds query_timeout{2000};
};

[[nodiscard]] caf::actor spawn_controller(caf::actor_system& sys,
                                          controller_options opts);

} // namespace edda::replication
