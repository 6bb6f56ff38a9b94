// owner_table: who owns each movable resource of the cluster ("group/<g>":
// a consumer group's coordinator), in etcd:
//
//   /edda/<cluster>/owners/<resource> = OwnerRecord{node_id, endpoint}
//
// bound to the owner's lease, so it goes when the owner's lease expires or
// is revoked. The key's create_revision is the owner's *fencing token*: it
// grows with every new owner, and every side effect the owner performs
// carries it; receivers refuse a lower token than the highest they saw.
//
// FindOwner answers from etcd: the holder if there is one; else the desired
// owner (rendezvous over the live members, every node computes the same);
// if that is this node and it is not fenced, the table claims the resource
// with a compare-and-swap (create only) bound to this node's lease, so at
// most one node ever holds it. It watches the owners prefix and tells its
// subscriber when a resource this node held is gone (its key deleted, or
// this node fenced): the local owner must stop at once.
//
// A detached actor: its handlers block on etcd.
//
// Protocol:
//   FindOwner            -> Owner   errors: unavailable (etcd)
//   ListOwners           -> OwnerList  every owned resource, from etcd
//   MembershipView          from the cluster actor (lease, fence, members)
//   (lost_atom, resource, token)  sent to `subscriber` when this node no
//                           longer holds resource under token
#pragma once

#include "coord/coord.hpp"

#include <caf/actor.hpp>

#include <string>

namespace edda::cluster {

struct owner_table_options {
  coord::client_ptr store;
  std::string cluster_name;
  std::string node_id;
  caf::actor cluster;    ///< the cluster actor: views come from it
  caf::actor subscriber; ///< told (lost_atom, ...) of lost resources
};

[[nodiscard]] caf::actor spawn_owner_table(caf::actor_system& sys,
                                           owner_table_options opts);

} // namespace edda::cluster
