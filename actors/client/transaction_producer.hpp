// transaction_producer: RocketMQ-style transactional messages.
//
//   auto p = transaction_producer::start(conn, {"wallet"}, checker);
//   auto r = (*p)->send_in_transaction(msg, [&](const message&, const
//   std::string& txn_id) {
//     return wallet.buy_money_market_fund(order) ? txn_outcome::commit
//                                                : txn_outcome::rollback;
//   });
//
// send_in_transaction stores a half message (durable, invisible to every
// consumer), runs the local transaction, then ends the transaction with its
// outcome (acknowledged once durable). If the end never arrives (the
// process dies, the network drops it, the local transaction says unknown),
// the node asks a checker of the same producer group ("check-back"): first
// the producer that sent it, else any live member of the group.
//
// The checker runs on the producer's own thread; an exception or a
// timeout counts as unknown, never as commit. Over the client door
// (connect_options::door) the producer holds one Transact stream (joined
// again after it ends); the pipelined form's local transactions then run
// on the stream's reader thread. Thread-safety:
// send_in_transaction may be called from several threads at once.
#pragma once

#include "client/connection.hpp"
#include "client/types.hpp"

#include <caf/expected.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace edda::client {

class door_transactions;

enum class txn_outcome { unknown = 0, commit = 1, rollback = 2 };
[[nodiscard]] const char* to_string(txn_outcome x);

/// A check-back from the node.
struct txn_check {
  std::string txn_id;
  message msg;
  uint32_t check = 1; ///< 1 for the first check of this transaction
};

using local_transaction =
  std::function<txn_outcome(const message& msg, const std::string& txn_id)>;
using txn_checker = std::function<txn_outcome(const txn_check&)>;

struct txn_producer_options {
  std::string group;          ///< producer group, 1-120 of [A-Za-z0-9_.-]
  std::string client_id;      ///< default host-pid-n
  int64_t check_after_ms = 0; ///< 0 = the node's txn.check_after
  std::chrono::milliseconds timeout{30000};
};

struct txn_result {
  std::string txn_id;
  txn_outcome local = txn_outcome::unknown; ///< what the local transaction said
  bool ended = false;  ///< the node recorded the outcome durably
  caf::error end_error; ///< why not, if not (check-back will settle it)
  std::optional<send_result> stored; ///< where a committed message went
};

class transaction_producer {
public:
  /// Joins the producer group. Errors: invalid_producer_group, unavailable.
  [[nodiscard]] static caf::expected<std::unique_ptr<transaction_producer>>
  start(connection conn, txn_producer_options opts, txn_checker checker);

  ~transaction_producer();

  /// Errors (nothing was stored): invalid_argument, unknown_topic,
  /// message_too_large, invalid_producer_group, unavailable, timeout.
  /// Once the half message is stored the result is a txn_result, even when
  /// the end could not be confirmed (`ended == false`).
  [[nodiscard]] caf::expected<txn_result>
  send_in_transaction(message m, const local_transaction& fn);

  using txn_callback = std::function<void(caf::expected<txn_result>)>;

  /// The pipelined form of send_in_transaction, for many transactions in
  /// flight from one thread: returns at once; `fn` runs on a client thread
  /// once the half message is durable, then the end is sent and `cb` gets
  /// the same result send_in_transaction would return. Keep `fn` and `cb`
  /// short: a slow local transaction delays the others (use the blocking
  /// form from several threads for those).
  void send_in_transaction_async(message m, local_transaction fn,
                                 txn_callback cb);

  /// Waits until every send_in_transaction_async so far has its result.
  void flush();

  /// Ends a transaction explicitly (e.g. one whose local transaction
  /// finished later). Errors: unknown_txn, txn_conflict.
  [[nodiscard]] caf::expected<txn_result> end(const std::string& txn_id,
                                              txn_outcome outcome);

  /// The two halves of send_in_transaction for local transactions that
  /// run elsewhere (the client door's Transact stream), many in one
  /// request (HalfBatch, EndBatch): stores the half messages and gives
  /// each one's transaction id once durable (or its error, as
  /// send_in_transaction's before the half is stored); ends transactions.
  /// One result per item, in order. Neither waits; the callbacks run on an
  /// actor thread.
  using halves_callback =
    std::function<void(std::vector<caf::expected<std::string>>)>;
  void store_halves_async(std::vector<message> ms, halves_callback cb);
  using ends_callback =
    std::function<void(std::vector<caf::expected<txn_result>>)>;
  void end_many_async(std::vector<std::pair<std::string, txn_outcome>> ends,
                      ends_callback cb);

  [[nodiscard]] const std::string& client_id() const;
  /// Check-backs this producer answered.
  [[nodiscard]] uint64_t checks_answered() const;

  struct impl;

private:
  explicit transaction_producer(std::shared_ptr<impl> i);
  std::shared_ptr<impl> impl_;
  std::shared_ptr<door_transactions> door_; // set: over the client door
};

} // namespace edda::client
