// What every broker actor of a node shares. Immutable after the node has
// started its actors (handles are filled in before any traffic).
#pragma once

#include "base/alerts.hpp"
#include "config/settings.hpp"
#include "cluster/lease_state.hpp"
#include "coord/coord.hpp"

#include <caf/actor.hpp>

#include <cstdint>
#include <functional>
#include <memory>

namespace edda::storage {
class environment;
} // namespace edda::storage

namespace edda::broker {

struct context {
  std::shared_ptr<storage::environment> env;
  caf::actor writer;    ///< the group-commit storage writer
  caf::actor scheduler; ///< delay / retry scheduler
  config::node_settings settings;
  std::string node_id; ///< this node's id (cluster/identity.hpp)
  /// In a cluster: etcd, and the node's cluster actor (members, links to
  /// the other nodes: cluster/cluster_actor.hpp). Empty on a single node.
  coord::client_ptr store;
  caf::actor cluster;
  /// In a cluster: the node's lease as its movable duties must check it
  /// before each side effect (cluster/lease_state.hpp).
  std::shared_ptr<const cluster::lease_state> lease;
  [[nodiscard]] bool clustered() const {
    return store != nullptr;
  }
  std::shared_ptr<alert_sink> alerts;
  /// Wall-clock milliseconds; deterministic tests substitute a manual clock.
  std::function<int64_t()> clock;
  /// How long an actor waits for the storage writer.
  int64_t write_timeout_ms = 60000;
};
using context_ptr = std::shared_ptr<const context>;

/// The retry topic of a clustering group (RocketMQ's naming).
[[nodiscard]] inline std::string retry_topic(const std::string& group) {
  return "%RETRY%" + group;
}
/// The nodes' own producer groups (a node's sagas: "edda.sagas.<node>"):
/// only the node that sent a transaction answers its check-back, and no
/// client may join them.
inline constexpr const char* node_group_prefix = "edda.";
[[nodiscard]] inline bool is_node_group(const std::string& group) {
  return group.rfind(node_group_prefix, 0) == 0;
}
[[nodiscard]] inline bool is_retry_topic(const std::string& topic) {
  return topic.rfind("%RETRY%", 0) == 0;
}

} // namespace edda::broker
