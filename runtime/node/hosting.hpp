// hosting: this node serving other nodes' replica groups after a failover
// (issue 13, CLUSTER.md phase 2).
//
// When the controller (replication/controller.hpp) elects this node's copy
// of group G (G's record in etcd names this node as its `host`), this node
// serves G from that copy: the replica host closes the copy (it is opened
// once per process) and stops applying ships to it, and a second
// embedded_node starts in this process over it, as member G (its own port,
// MemberInfo.hosted_by = this node): G's partitions, transactions (check-back
// resumes), saga shards (open sagas resume), idempotency keys and offsets,
// with its own shipper, whose followers are other nodes (never this one).
// Clients and peers find G at its new endpoint through etcd, as after a
// restart.
//
// A thread looks at the group records every 500 ms. A hosted group stops
// (its copy is followed again) when its record names another host, when it
// is marked `move_to` (its own node is back and in sync: the hand-back), or
// when it stops on its own (deposed: its recorder saw a newer epoch). A start
// that fails is tried again after 2 s. stop() stops every hosted group
// first (each leaves the cluster, so the controller elects again).
#pragma once

#include "config/settings.hpp"
#include "coord/coord.hpp"
#include "sagas/saga.hpp"

#include <caf/actor.hpp>

#include <memory>
#include <string>
#include <vector>

namespace edda::node {

struct hosting_options {
  config::node_settings settings; ///< this node's; a group's derive from it
  std::string node_id;
  coord::client_ptr store;
  caf::actor replicas; ///< this node's replica host
  /// Saga types given to this node in code (declared ones come from the
  /// settings): a hosted group runs them too.
  std::vector<sagas::saga_definition> sagas;
  /// Host part of the endpoint hosted groups advertise ("" : listen_host).
  std::string advertise_host;
};

class hosting {
public:
  /// Starts the thread. `sys` runs the replica host (for requests to it).
  hosting(caf::actor_system& sys, hosting_options opts);
  ~hosting();
  hosting(const hosting&) = delete;
  hosting& operator=(const hosting&) = delete;

  /// Stops every hosted group and the thread. Idempotent.
  void stop();

  /// The groups served here now, with their endpoints ("G@host:port").
  [[nodiscard]] std::vector<std::string> served() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace edda::node
