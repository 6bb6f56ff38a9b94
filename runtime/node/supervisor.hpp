// supervisor: keeps the long-lived actors of a node running.
//
// Every service of the node (gateway, txn coordinator, topic manager, group
// manager, idempotency store, delay scheduler) sits behind a *keeper*: a
// small actor that is the service's stable handle. Whoever holds a service
// (the gateway holds topics, groups, dedup and txn; the group manager, the
// scheduler, the txn coordinator and the sagas hold topics; the partitions
// hold the scheduler; clients hold the gateway, which is the published
// actor) holds its keeper, so a handle never goes stale. The keeper passes
// every message on to the service's current actor (its *incarnation*), with
// the original sender, so replies go straight back to the requester.
//
// When an incarnation dies with an error (anything but normal or
// user_shutdown: an exception, exit_reason::kill, ...), its keeper starts a
// new one after a pause: 200 ms, doubling up to 5 s, back to 200 ms once an
// incarnation stayed up 10 s (restart_policy). The new incarnation rebuilds
// its state from LMDB as every service does at spawn. Each restart is a WARN
// line and counts in the metric `node.restarts.<name>`. While a service
// restarts, a request to it fails at once with `unavailable` ("<name> is
// restarting; try again"); a message that is no request is dropped (the
// scheduler's DelayAdded: the new scheduler scans LMDB anyway). Requests
// that were in the dead incarnation's mailbox fail with
// request_receiver_down, as they would for any dead actor.
//
// An incarnation that stops on purpose (normal, user_shutdown) is not
// restarted: its keeper logs it and quits with the same reason.
//
// Registrations. Some services hold live handles of their clients in
// memory only: the txn coordinator its registered producers (for
// check-back), the group manager its members. A new incarnation would not
// know them, and the clients would not notice (the keeper never dies). So a
// keeper may remember such requests as it passes them on (service::remember,
// keyed; a later request may forget keys) together with their sender, drops
// them when the sender dies (it monitors it), and gives each to every new
// incarnation (service::replay). Remembered optimistically: a registration
// the service refused is replayed too, and refused again.
//
// The storage writer is *not* restarted: it is the only LMDB writer, every
// actor of the node holds it (broker::context), a crash may leave its
// pending group commit half answered, and its failures are sticky by design
// (storage_full / storage_error: "restart the node"). Its death is fatal:
// watch_writer() logs an ERROR, counts `node.fatal`, raises the alert
// `node_fatal`, stops every keeper (and so every service: clients see the
// node go away) and calls on_fatal (the CLI then exits with status 1).
// LMDB is crash-safe: nothing acknowledged is lost; restart the node.
//
// Keeper protocol (besides passing everything else on):
//   current_atom          -> caf::actor  the current incarnation (tests,
//                                        diagnostics); unavailable while it
//                                        restarts
//   (restart_atom, n)     from itself: start incarnation n + 1 after a pause
//   exit_msg              stop the incarnation with that reason, quit
//                         once it has ended (it monitors its incarnation:
//                         a link would let exit_reason::kill of the
//                         incarnation kill the keeper too)
//
// Thread-safety: supervisor's members may be called from any thread.
#pragma once

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace edda::node {

/// How long a keeper waits before it starts a service again.
struct restart_policy {
  std::chrono::milliseconds first{200}; ///< pause before the first restart
  std::chrono::milliseconds max{5000};  ///< the pause doubles up to this
  /// An incarnation that stayed up this long was healthy: the pause before
  /// the next restart is `first` again.
  std::chrono::milliseconds stable{10000};
};

/// What a keeper does with a message it passes on (service::remember).
struct memo {
  enum kind { none, keep, forget };
  kind what = none;
  /// keep: the key to keep the message under (replaces an older one);
  /// forget: every kept key that starts with this.
  std::string key;
};

/// One supervised service.
struct service {
  /// "gateway", "topics", ...: the metric node.restarts.<name>, log lines.
  std::string name;
  /// Spawns an incarnation (it loads its state from LMDB as it starts).
  std::function<caf::actor(caf::actor_system&)> spawn;
  /// Optional: runs after each restart (not the first start) with the new
  /// incarnation: give it again what the first one got by message at
  /// startup (broker::wire_up).
  std::function<void(const caf::actor& incarnation)> restarted;
  /// Optional: what to remember of each message passed on (registrations).
  std::function<memo(const caf::type_erased_tuple&)> remember;
  /// Required with `remember`: gives one remembered message, with its
  /// original sender, to a new incarnation (as a request from `keeper`).
  std::function<void(caf::event_based_actor* keeper,
                     const caf::actor& incarnation, const caf::message& msg,
                     const caf::actor& sender)>
    replay;
};

/// Spawns the keeper of `s` and its first incarnation; returns the keeper.
[[nodiscard]] caf::actor spawn_keeper(caf::actor_system& sys, service s,
                                      restart_policy policy = {});

/// The keepers of one node, and the watch on its storage writer.
class supervisor {
public:
  explicit supervisor(caf::actor_system& sys, restart_policy policy = {});
  ~supervisor();
  supervisor(const supervisor&) = delete;
  supervisor& operator=(const supervisor&) = delete;

  /// Starts `s` under a keeper; returns the keeper: the service's handle.
  [[nodiscard]] caf::actor keep(service s);

  /// Watches the storage writer: its death, unless stop() came first, is
  /// fatal (see the header comment). `on_fatal` runs once, on an actor
  /// thread: keep it short, and do not call embedded_node::stop() in it.
  void watch_writer(const caf::actor& writer,
                    std::function<void(const caf::error&)> on_fatal);

  /// The keeper of `name` (null if there is none).
  [[nodiscard]] caf::actor keeper(const std::string& name) const;
  /// The current incarnation of `name`: null while it restarts, after it
  /// stopped, or for an unknown name. Asks its keeper (at most 5 s).
  [[nodiscard]] caf::actor incarnation(const std::string& name) const;
  /// Why the node stopped on its own (the writer died), or none.
  [[nodiscard]] caf::error failure() const;

  /// Stops every keeper (gateway first: in the order they were added,
  /// reversed) and waits until each has quit, at most `timeout` in all.
  /// The keepers are forgotten. Idempotent.
  void stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));

private:
  void fatal(const caf::error& reason);

  caf::actor_system& sys_;
  restart_policy policy_;
  mutable std::mutex mtx_;
  std::vector<std::pair<std::string, caf::actor>> keepers_;
  caf::actor watch_;
  caf::error failure_;
  std::function<void(const caf::error&)> on_fatal_;
  std::atomic<bool> stopping_{false};
};

} // namespace edda::node
