// topic_table: the cluster's topic metadata, in etcd:
//
//   /edda/<cluster>/topics/<name> = ClusterTopic{id, homes, kind, ...}
//   /edda/<cluster>/topic_ids     = the next topic id (decimal)
//
// Only in a cluster (a single node keeps its topics in LMDB, topic_manager).
// Every change is a compare-and-swap, so two nodes creating one topic at
// once cannot both succeed, and ids are unique in the cluster. A new
// partition's home is chosen when it is made (cluster::place_partitions over
// the live members, by partitions held) and never changes: data stays on
// its home.
//
// It watches the topics prefix and pushes what etcd says to the node's topic
// manager (TopicUpdate: a snapshot first, then changes, in revision order;
// a snapshot again after the watch had to be made anew).
//
// A detached actor: its handlers block on etcd (bounded by the store's call
// timeout).
//
// Protocol (from the topic manager, which checked names and bounds):
//   (CreateTopic, uint32_t kind) -> ClusterTopic   (kind: TopicKind)
//                errors: topic_exists, unavailable (etcd, or no live member)
//   AlterTopic  -> ClusterTopic   partitions only grow; new ones are placed;
//                                 retention (set_retention*) replaced
//   (AlterTopic, home) -> ClusterTopic   one more partition, homed on
//                                 `home`, unless it has one there already
//   DeleteTopic -> Done           errors: unknown_topic
//   GetTopic    -> ClusterTopic   read from etcd now (a topic the watch has
//                                 not delivered yet); unknown_topic
#pragma once

#include "coord/coord.hpp"

#include <caf/actor.hpp>

#include <string>

namespace edda::broker {

struct topic_table_options {
  coord::client_ptr store;
  std::string cluster_name;
  caf::actor manager; ///< receives TopicUpdate
};

[[nodiscard]] caf::actor spawn_topic_table(caf::actor_system& sys,
                                           topic_table_options opts);

} // namespace edda::broker
