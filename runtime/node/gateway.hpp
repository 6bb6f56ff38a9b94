// gateway: the actor a node publishes, where every client request arrives
// (in-process or over the network). It maps each request to the resource
// that owns it and passes it on; replies go straight back to the client.
//
// Resources and their owners (all on this node for a single node):
//   topic/<name>           topic metadata: the topic manager
//   <topic>/<partition>    a partition (produce, fetch): through the topic
//                          manager
//   group/<name>           a consumer group: the group manager
//   txn/<partition>        transactional messages: the txn coordinator
//   saga-shard/<k>         a saga: shard shard_of(id, shards)
//   dedup                  the idempotency store
//
// Protocol: every request of runtime/wire/broker.proto that a client sends
// (see client::admin and the client actors), plus NodeStatusRequest ->
// NodeStatus, and (runtime/wire/cluster.proto) ClusterStatusRequest and
// PeerHello (also with the sender's gateway: (PeerHello, actor), between
// node ports behind TLS), and (replication.proto) ReplShip, passed to the
// node's cluster actor.
#pragma once

#include "broker/context.hpp"

#include <caf/fwd.hpp>

#include <vector>

namespace edda::node {

[[nodiscard]] caf::actor spawn_gateway(caf::actor_system& sys,
                                       broker::context_ptr ctx,
                                       caf::actor topics, caf::actor groups,
                                       caf::actor dedup, caf::actor txn,
                                       std::vector<caf::actor> saga_shards = {},
                                       caf::actor saga_directory = {},
                                       caf::actor cluster = {});

} // namespace edda::node
