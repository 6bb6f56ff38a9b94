// followers: which nodes keep copies of this node's storage, told to the
// shipper (shipper.hpp) with where each one's gateway is (issue 13).
//
// It follows the node's cluster actor (cluster/cluster_actor.hpp: the
// membership views and the links) and keeps replication_factor - 1
// followers among the live members: those it has keep their place while
// they are members (a follower is never swapped for a newcomer: that would
// cost a full copy), and a missing place goes to the next member ranked by
// rendezvous weight for "replicas/<this node>". For each follower it sends
// the shipper (link_atom, id, gateway) once its link is up (again after a
// reconnect: the new gateway handle), and (link_atom, id, null) when it is
// no longer a follower (left the membership).
//
// Not yet: the followers are this node's choice, not a record in etcd
// written by one controller (CLUSTER.md phase 2 has that next).
#pragma once

#include <caf/fwd.hpp>

#include <cstdint>
#include <string>

namespace edda::replication {

/// `host`: the node serving `group` after a failover ("" at home): never
/// a follower (its copy became the group's storage there). Members that
/// are groups served elsewhere (MemberInfo.hosted_by) are never followers
/// either.
///
/// `recorder` (group_record.hpp; may be null) tells the group's record: the
/// members an operator asked to keep a copy (add-replica) follow too,
/// beyond the factor, while they are live members.
[[nodiscard]] caf::actor spawn_followers(caf::actor_system& sys,
                                         std::string group, std::string host,
                                         uint32_t replication_factor,
                                         caf::actor shipper,
                                         caf::actor cluster,
                                         caf::actor recorder);

} // namespace edda::replication
