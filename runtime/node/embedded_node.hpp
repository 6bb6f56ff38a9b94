// embedded_node: the composition root. Builds one node in this process:
// opens storage, starts the actor system, spawns the storage writer, the
// delay scheduler, the topic and group managers, the idempotency store and
// the frontend, and (optionally) publishes the frontend on a TCP port.
//
// Ownership: the embedded_node owns everything; connections made from it
// must not outlive it. Thread-safety: all members may be called from any
// thread; stop() is idempotent.
#pragma once

#include "base/alerts.hpp"
#include "client/connection.hpp"
#include "config/settings.hpp"
#include "sagas/saga.hpp"

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace edda::node {

struct start_options {
  bool listen = true; ///< publish on settings.listen_host:listen_port
  /// Wall clock in ms; tests may substitute their own.
  std::function<int64_t()> clock;
  /// Saga types this node runs (validated at start: invalid_saga).
  std::vector<sagas::saga_definition> sagas;
  /// Set (by a signal) while the node starts: a start that waits for
  /// something (etcd) gives up with shutting_down. May be null.
  const std::atomic<bool>* cancel = nullptr;
  /// Called once if the node stops on its own: its storage writer died (see
  /// supervisor.hpp). Runs on an actor thread: keep it short and do not
  /// call stop() in it (signal the thread that owns the node). May be null.
  std::function<void(const caf::error&)> on_fatal;
  /// Internal (hosting.hpp): this node is a replica group served by node
  /// `hosted_by` after a failover: it claims the group as that host, keeps
  /// no copies of others, and never picks that node as a follower.
  std::string hosted_by;
  /// With listen port 0 and no node.advertise: the host its endpoint names
  /// ("" : node.listen_host).
  std::string advertise_host;
  /// Internal (the hand-back, see start()): this node is the standby of
  /// node `standby_for`, whose group is served elsewhere since a failover:
  /// it keeps that group's copy in `standby_copy_dir` (that node's data
  /// dir), follows nothing else, homes nothing, and replicates nothing of
  /// its own.
  std::string standby_for;
  std::string standby_copy_dir;
};

class embedded_node {
public:
  /// Starts a node. Errors: data_dir_unusable, data_dir_locked,
  /// storage_error, bad_config, unavailable (cannot listen: the port is
  /// taken, with the OS reason).
  ///
  /// A cluster node whose replica group another node serves since a
  /// failover (it was down, or its disk was lost) first follows its group:
  /// a standby member "<id>~standby" (its own small env in
  /// `<data_dir>/standby`, a port of its own) gets the group's commits into
  /// this node's data dir, like any follower (a full copy if the data dir
  /// is empty or holds writes the elected copy lacks). Once that copy is in
  /// the recorded in-sync set the controller hands the group back (the
  /// serving node stops it, the copy is elected), and start() goes on from
  /// the copy as usual. It returns only then (or cancelled: shutting_down).
  /// Logged at each step.
  [[nodiscard]] static caf::expected<std::unique_ptr<embedded_node>>
  start(const config::node_settings& settings, start_options opts = {});

  ~embedded_node();
  embedded_node(const embedded_node&) = delete;
  embedded_node& operator=(const embedded_node&) = delete;

  /// A connection to this node that does not go through the network.
  [[nodiscard]] client::connection connect() const;
  /// The port the node listens on (0 if not listening).
  [[nodiscard]] uint16_t port() const;
  /// The port of the client door (gRPC edda.api.v1, api.listen), 0 if it
  /// has none (api.listen off, or not listening).
  [[nodiscard]] uint16_t api_port() const;
  /// The port of the admin HTTP server (/metrics, /health, /ready;
  /// node.admin_listen), 0 if it has none.
  [[nodiscard]] uint16_t admin_port() const;
  /// "host:port" peers and clients reach it at (node.advertise, else the
  /// listen address); empty if not listening.
  [[nodiscard]] const std::string& endpoint() const;
  [[nodiscard]] const config::node_settings& settings() const;
  /// Register alert hooks here (DLQ moves, ...).
  [[nodiscard]] alert_sink& alerts();
  /// Stops every actor and closes storage.
  void stop();

  /// For tests and diagnostics: the current actor of a supervised service
  /// ("gateway", "topics", "groups", "dedup", "txn", "scheduler"; see
  /// supervisor.hpp), null while it restarts or after the node stopped;
  /// "writer": the storage writer (not restarted: its death stops the node).
  [[nodiscard]] caf::actor incarnation(const std::string& service) const;
  /// Why the node stopped on its own (its storage writer died, or its
  /// replica group was taken over by a failover), or none.
  [[nodiscard]] caf::error failure() const;
  /// Groups of other nodes this node serves after a failover
  /// ("group@host:port"; hosting.hpp).
  [[nodiscard]] std::vector<std::string> hosted_groups() const;

  struct impl;

private:
  explicit embedded_node(std::unique_ptr<impl> i);
  /// One start; `served_elsewhere` set if refused because this node's
  /// group is served by another node since a failover.
  static caf::expected<std::unique_ptr<embedded_node>>
  start_once(const config::node_settings& settings, start_options opts,
             bool& served_elsewhere, std::string& node_id);
  /// Runs this node's standby until the controller elects its copy (the
  /// standby is returned still running, the copy closed), see start().
  static caf::expected<std::unique_ptr<embedded_node>>
  follow_own_group(const config::node_settings& settings,
                   const std::string& node_id, const start_options& opts);
  std::unique_ptr<impl> impl_;
};

} // namespace edda::node
