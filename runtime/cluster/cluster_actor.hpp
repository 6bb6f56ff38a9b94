// cluster_actor: the node's view of its cluster, and its links to the other
// nodes.
//
// It keeps the latest membership view (pushed by the membership thread) and
// a full mesh of direct links: for every other member of a larger id it
// connects to the endpoint the member published in etcd (never to a handle
// relayed by a third node), checks with PeerHello that the peer is that
// node of this cluster, and monitors the link; a member of a smaller id
// makes the link to this node, which takes it from its hello
// (one_way_links). A link that drops is made again after `reconnect_after`
// (longer than the middleman's connection timeout, so the peer has dropped
// its side of the old connection first: CAF issue 1304), then with
// doubling backoff up to 5 s (a first link that did not come up: after
// 200 ms, doubling). Ownership is never decided from a link's loss: only
// etcd says who is a member.
//
// Protocol:
//   MembershipView            from the membership thread; no reply
//   ClusterStatusRequest   -> ClusterStatus   (admin, through the gateway;
//                             not brief: with the shipper's replication
//                             status, if it answers within a second)
//   PeerHello              -> PeerWelcome     (another node's cluster actor,
//                             through our gateway); invalid_argument when the
//                             sender is of another cluster (name, or id: one
//                             name on two etcds) or meant another node; each
//                             refusal: a WARN line and cluster.peers_refused
//   (PeerHello, actor gw)  -> PeerWelcome     the same, with one_way_links:
//                             the sender (a member of a smaller id, of the
//                             incarnation this node's view has) links here,
//                             and gw (its gateway, on the node that sent the
//                             hello) becomes the link; unavailable while this
//                             node's view does not have the sender yet
//   (link_atom, actor gw)     this node's own gateway (one_way_links)
//   (watch_atom, actor s)     s follows the cluster: it gets the current
//                             MembershipView and every later one, and
//                             (link_atom, node_id, gateway) for every link
//                             that comes up (gateway null: went down)
//   (link_atom, ...)          from its own connector actors
//   ReplShip               -> ReplAck (replication: a leader's commits for
//                             this node's replica of its storage, through
//                             our gateway) passed to the replica host, only
//                             from the node that leads the group, over its
//                             cluster link (a client or any other node is
//                             refused: invalid_argument, counted in
//                             replication.ships_refused)
#pragma once

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace edda::cluster {

struct cluster_actor_options {
  bool clustered = false; ///< false: a single node, no etcd
  std::string cluster_name;
  /// etcd's /edda/<cluster>/cluster_id (empty: not known, not checked).
  std::string cluster_id;
  std::string node_id;
  std::string endpoint; ///< this node's advertised host:port
  std::string etcd;     ///< endpoints, for status
  std::chrono::milliseconds lease_ttl{10000};
  std::chrono::milliseconds reconnect_after{2500};
  std::chrono::milliseconds hello_timeout{2000};
  /// The replica host (replication/replica_host.hpp); null: this node
  /// keeps no replicas (cluster.replication_factor 1).
  caf::actor replicas;
  /// This node's shipper (replication/shipper.hpp), asked for the
  /// replication part of a full status; null: no replication.
  caf::actor shipper;
  /// The link of a pair of nodes is made by the node of the smaller id
  /// (with both dialing, CAF 0.17's openssl transport never settled on one
  /// connection, and plain BASP raced and kept either). false: both dial
  /// (not used by the node). The other node takes the
  /// link from the hello, which carries the sender's gateway and is said
  /// again every reconnect_after and after a rejoin; it needs this node's
  /// own gateway: (link_atom, gateway).
  bool one_way_links = false;
  /// This node's port is behind mutual TLS (MemberInfo.node_tls): members
  /// that differ are not linked.
  bool node_tls = false;
};

[[nodiscard]] caf::actor spawn_cluster_actor(caf::actor_system& sys,
                                             cluster_actor_options opts);

} // namespace edda::cluster
