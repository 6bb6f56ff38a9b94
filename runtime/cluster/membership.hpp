// membership: this node's place in the cluster's member list in etcd.
//
//   /edda/<cluster>/members/<node_id> = MemberInfo{endpoint, incarnation,...}
//
// bound to one lease per node (TTL cluster.lease_ttl). join() clears the key
// of the node's previous life (found by the lease it persisted), grants a
// lease, persists it, puts the member key (create-only: a second live node
// with the same id is refused), lists the members and watches them.
//
// A thread then renews the lease every TTL/4. The node is *fenced* as soon
// as it cannot be sure its lease is alive: when no keepalive has succeeded
// for 3/4 of the TTL (measured on the monotonic clock from when the last
// successful keepalive was sent, so also right after SIGSTOP / SIGCONT), or
// when etcd says the lease expired. etcd expires a lease no earlier than a
// TTL after it received the last keepalive, so a fenced node stops its
// movable duties before anyone else can take them over. A fenced node
// rejoins once etcd answers: it revokes the old lease, and joins again with
// a new lease and a new incarnation (so every ownership it held must be
// acquired again, with a new token).
//
// Movable duties check `lease_valid()` (an atomic deadline) right before
// each side effect; the views go to `on_view` whenever the member list, the
// fence or the incarnation changes.
//
// Thread-safety: all members may be called from any thread. `on_view` and
// `persist` run on the membership's threads: they must not block long and
// must not call back into the membership.
#pragma once

#include "cluster/lease_state.hpp"
#include "coord/coord.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace edda::cluster {

using steady_time = std::chrono::steady_clock::time_point;

struct member {
  std::string node_id;
  std::string endpoint;
  uint64_t incarnation = 0;
  int64_t started_ms = 0;
  coord::lease_id lease = 0;
  int64_t create_revision = 0; ///< of its member key: when it joined
  /// A group served by node `hosted_by` after a failover (empty: a node).
  std::string hosted_by;
  /// A node following its own group `standby_for` to take it back (its id
  /// is "<group>~standby"): listed in membership_view::standbys only.
  std::string standby_for;
  bool node_tls = false; ///< its node port is behind mutual TLS
};

struct membership_view {
  /// Sorted by node id; includes this node (unless it is a standby).
  std::vector<member> members;
  /// Standbys (member::standby_for): linked to, never homes or owners.
  std::vector<member> standbys;
  bool fenced = false;
  coord::lease_id lease = 0;
  uint64_t incarnation = 0;
  int64_t revision = 0;    ///< etcd revision of the member list
  steady_time renewed{};   ///< when the last successful keepalive was sent
  std::string problem;     ///< why etcd does not answer, if it does not
  /// Registered nodes (nodes/<id>, kept while a node is down) that run
  /// sagas, in the order they registered (oldest first).
  std::vector<std::string> saga_homes;
  std::vector<int64_t> saga_home_revisions; ///< create_revision of each
  /// Every registered node, live or down (by id): whose data a list
  /// gathered from the live ones misses.
  std::vector<std::string> registered;
  /// create_revision of nodes/%saga-epoch: when the cluster's first saga
  /// started (0: none yet). Saga ids started since then keep the home they
  /// had over the nodes registered at the time.
  int64_t saga_epoch = 0;
};

struct membership_options {
  std::string cluster_name;
  std::string node_id;
  std::string endpoint; ///< host:port clients and peers use
  std::string version;
  bool runs_sagas = false; ///< registered in nodes/<id>
  /// This member is a replica group served by that node (failover).
  std::string hosted_by;
  /// This member follows that group to take it back (a standby: not
  /// registered in nodes/, listed apart).
  std::string standby_for;
  bool node_tls = false; ///< the node port is behind mutual TLS
  std::chrono::milliseconds ttl{10000};
  /// The lease and incarnation of the previous start (cluster_record).
  coord::lease_id previous_lease = 0;
  uint64_t previous_incarnation = 0;
  /// Persists (lease, incarnation) durably; called before the member key is
  /// written under that lease. An error stops the join.
  std::function<caf::error(coord::lease_id, uint64_t)> persist;
  /// Each new view (see the header comment).
  std::function<void(const membership_view&)> on_view;
  /// The monotonic clock; tests substitute their own.
  std::function<steady_time()> now;
  /// Wall clock ms for MemberInfo.started_ms.
  std::function<int64_t()> wall_ms;
  /// false: no background thread; the test calls tick().
  bool run_thread = true;
  /// Shared with the node's movable duties: kept up to date with the
  /// lease (the real clock; tests with their own clock leave it null).
  std::shared_ptr<lease_state> shared;
};

class membership {
public:
  /// "/edda/<cluster>/".
  [[nodiscard]] static std::string prefix(const std::string& cluster_name);

  /// The member key of `node_id` if it is this node's own from a previous
  /// life (bound to `own_lease`), nullopt if there is none. Errors:
  /// bad_config when it is bound to another lease (a live process with the
  /// same node.name, or a copy of this data dir), unavailable / timeout.
  [[nodiscard]] static caf::expected<std::optional<coord::key_value>>
  previous_member_key(coord::client& store, const std::string& cluster_name,
                      const std::string& node_id, coord::lease_id own_lease);

  /// Joins (see the header comment). Errors: unavailable / timeout (etcd),
  /// bad_config (node id held by another live member), what `persist`
  /// returns.
  [[nodiscard]] static caf::expected<std::unique_ptr<membership>>
  join(coord::client_ptr store, membership_options opts);

  /// leave()s.
  ~membership();
  membership(const membership&) = delete;
  membership& operator=(const membership&) = delete;

  /// Stops the thread and the watch and revokes the lease (best effort:
  /// bounded by the store's call timeout), so that the member key goes at
  /// once. Idempotent.
  void leave();

  [[nodiscard]] membership_view view() const;

  /// True while the lease is certainly alive (see the header comment).
  [[nodiscard]] bool lease_valid() const;

  /// One round of the background loop: fence if due, renew the lease if
  /// due, rejoin if fenced, re-list after a failed watch.
  void tick();

private:
  explicit membership(coord::client_ptr store, membership_options opts);

  caf::error join_once(bool first);
  caf::error list_and_watch();
  void on_events(const std::vector<coord::watch_event>& evs);
  void on_node_events(const std::vector<coord::watch_event>& evs);
  void fill(membership_view& v) const;
  void fence(const std::string& why);
  void notify();
  void run();
  [[nodiscard]] std::string key() const;

  coord::client_ptr store_;
  membership_options opts_;
  std::chrono::milliseconds period_; ///< keepalive interval: TTL / 4
  std::chrono::milliseconds valid_;  ///< 3/4 TTL after the last renewal

  mutable std::mutex mtx_;
  std::map<std::string, member> members_;
  struct registration {
    bool runs_sagas = false;
    int64_t revision = 0; ///< create_revision of nodes/<id>: the order
  };
  std::map<std::string, registration> registered_; ///< nodes/ by node id
  int64_t saga_epoch_ = 0;
  coord::lease_id lease_ = 0;
  uint64_t incarnation_ = 0;
  int64_t revision_ = 0;
  bool fenced_ = false;
  bool relist_ = false; ///< the watch failed: list and watch again
  steady_time renewed_{};
  steady_time last_attempt_{};
  std::string problem_;
  std::atomic<int64_t> valid_until_ns_{0}; ///< steady clock
  std::unique_ptr<coord::watch> watch_;
  std::unique_ptr<coord::watch> nodes_watch_;

  std::mutex run_mtx_;
  std::condition_variable run_cv_;
  bool stopping_ = false;
  bool left_ = false;
  std::thread thread_;
  /// Lists and watches anew off the renewal thread: a slow etcd must not
  /// hold back the keepalive (and so fence the node).
  std::thread relister_;
  std::atomic<bool> relisting_{false};
  void start_relist();
};

} // namespace edda::cluster
