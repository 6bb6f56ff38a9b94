// route_table: a client actor's copy of the cluster map (ClusterMap, from
// the node it is connected to) and its direct links to the other members'
// gateways, so that it can send a partition's traffic straight to the
// partition's home instead of through its node (which would pass it on).
//
// What the table says is advice: a stale entry costs a refused send
// (not_owner) or a hop through the node, never a wrong result, because the
// home checks that it is the home, and the node routes anything the client
// could not.
//
// Confinement: one actor (its state); internal, includes CAF.
#pragma once

#include "wire/types.hpp"

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace caf {
class actor_system;
} // namespace caf

namespace edda::client {

struct connection_impl;

struct topic_route {
  uint32_t id = 0; ///< the topic's id (cluster: in txn ids)
  uint32_t partitions = 0;
  std::vector<std::string> homes; ///< cluster: node per partition
  std::vector<bool> live;         ///< cluster: per partition, as last heard
  int64_t revision = 0;           ///< mod_revision of topics/<name>
  int64_t fetched_ms = 0;
  uint32_t turn = 0; ///< keyless sends, in turn
};

class route_table {
public:
  /// The last map came from a node of a cluster.
  [[nodiscard]] bool clustered() const {
    return clustered_;
  }

  /// Takes a map that answered a request for `asked`: a topic of `asked`
  /// missing from it is forgotten (it does not exist); a topic's route is
  /// replaced unless the one held has a higher revision (an older map).
  void apply(const wire::pb::ClusterMap& m,
             const std::vector<std::string>& asked, int64_t now);

  /// The route of `topic`, null if none is known.
  [[nodiscard]] topic_route* find(const std::string& topic);
  void forget(const std::string& topic);
  /// Forgets every route (the node was lost); links stay.
  void clear_routes() {
    topics_.clear();
  }
  /// Names of the topics held.
  [[nodiscard]] std::vector<std::string> topics() const;

  /// A reply says the topic now has `n` partitions: the new ones count, with
  /// no known home (sent through the node) until the next map.
  void grow(const std::string& topic, uint32_t n);

  /// Partition p of `t` has a live home as far as this client knows.
  [[nodiscard]] bool usable(const topic_route& t, uint32_t p) const;

  /// Where partition p of `t` can be sent directly: the linked gateway of
  /// its home; null if the home is the client's own node (it is reached
  /// through the connection), not live, or not linked.
  [[nodiscard]] caf::actor direct(const topic_route& t, uint32_t p) const;

  /// Members with live homes that have no link and none being made:
  /// (node id, endpoint); marks them as being linked.
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> to_link();
  /// A link was made (or failed: `gw` null).
  void linked(const std::string& node, caf::actor gw);
  /// A linked gateway went down: forgets its link and marks its partitions
  /// not live until a map says otherwise. Returns its node id ("" if the
  /// address is no gateway of the table).
  std::string down(const caf::actor_addr& gw);

private:
  bool clustered_ = false;
  int64_t revision_ = 0;
  std::string self_; ///< the node that answered (the connection's)
  std::map<std::string, std::string> endpoints_; ///< members
  std::map<std::string, caf::actor> gateways_;   ///< linked members
  std::set<std::string> linking_;
  std::set<std::string> down_; ///< lost links, until the next map
  std::map<std::string, topic_route> topics_;
};

/// Links the members `rt` wants (to_link), each on a detached helper
/// (connection_impl::link blocks); `target` then gets (link_atom, node id,
/// gateway) for each, the gateway null if the link failed. A helper holds
/// `target` weakly, and the connection only while its link is made.
void link_members(caf::actor_system& sys, route_table& rt,
                  const std::shared_ptr<connection_impl>& conn,
                  const caf::actor& target);

} // namespace edda::client
