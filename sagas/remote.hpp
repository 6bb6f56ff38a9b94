// Participants in another process: a program that carries out saga steps
// connects to the node and serves its functions under names that saga
// definitions refer to (participant::named).
//
//   auto host = sagas::participant_host::start(conn, {
//     {"ledger.debit", debit}, {"ledger.refund", refund}});
//
// The node sends each StepCommand to one of the live hosts serving the
// name (in turn when there are several) and forgets a host when its
// connection drops. After the node was lost (a restart) the host registers
// again on its own; until then the node's attempts fail and are retried by
// the step's policy.
#pragma once

#include "client/connection.hpp"
#include "sagas/saga.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace edda::sagas {

struct host_options {
  std::string client_id; ///< for the node's log; default: host-pid-n
  /// Threads serving steps; each registers every name, and the node spreads
  /// commands over them.
  uint32_t workers = 1;
  std::chrono::milliseconds timeout{5000}; ///< for registering
  /// The node may send a worker several commands in one batch (served one
  /// after another, answered together). Off for handlers that wait on
  /// something remote: each command then has its own answer (with
  /// start_async, any number open at once; a batch would wait for its
  /// slowest step).
  bool batches = true;
};

/// A step served elsewhere (the client door serves a Participate stream's
/// names with these): called on the host's worker, which serves other
/// commands meanwhile; calls `done` exactly once, from any thread, with
/// the outcome.
using async_step_function = std::function<void(
  const step_request&, std::function<void(step_result)> done)>;

class participant_host {
public:
  /// Registers and serves `handlers` (participant name -> function; an
  /// exception is a retryable failure). Errors: invalid_argument (no
  /// handlers, a bad name, workers 0), unavailable, unknown_saga_type (the
  /// node runs no sagas).
  [[nodiscard]] static caf::expected<std::unique_ptr<participant_host>>
  start(client::connection conn, std::map<std::string, step_function> handlers,
        host_options opts = {});
  /// The same with functions that answer later (async_step_function): one
  /// worker has any number of steps open. Over a node port or in process
  /// only (invalid_argument over the client door).
  [[nodiscard]] static caf::expected<std::unique_ptr<participant_host>>
  start_async(client::connection conn,
              std::map<std::string, async_step_function> handlers,
              host_options opts = {});
  ~participant_host();
  participant_host(const participant_host&) = delete;
  participant_host& operator=(const participant_host&) = delete;

  /// Step commands answered so far.
  [[nodiscard]] uint64_t served() const;

  struct impl;

private:
  explicit participant_host(std::shared_ptr<impl> i);
  static caf::expected<std::unique_ptr<participant_host>>
  spawn_workers(std::shared_ptr<impl> im);
  std::shared_ptr<impl> impl_;
};

} // namespace edda::sagas
