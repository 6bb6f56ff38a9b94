// Internal: transaction_producer over the client door (see
// transaction_producer.hpp). No gRPC here.
#pragma once

#include "client/door_link.hpp"
#include "client/transaction_producer.hpp"

#include <functional>
#include <memory>

namespace edda::client {

/// Runs the application's local transaction; a throw counts as unknown.
[[nodiscard]] txn_outcome run_local(const local_transaction& fn,
                                    const message& m,
                                    const std::string& txn_id);
/// The end_error of a transaction whose local outcome is unknown.
[[nodiscard]] caf::error outcome_unknown();
/// After its half message is stored: runs the local transaction, then ends
/// the transaction with its outcome through `end` (not if unknown); what
/// send_in_transaction returns (an end that failed is its end_error).
[[nodiscard]] caf::expected<txn_result>
run_and_end(std::string txn_id, const message& m, const local_transaction& fn,
            const std::function<caf::expected<txn_result>(
              const std::string&, txn_outcome)>& end);

class door_transactions {
public:
  /// Joins the producer group over a Transact stream.
  [[nodiscard]] static caf::expected<std::shared_ptr<door_transactions>>
  start(std::shared_ptr<door_link> link, const txn_producer_options& opts,
        txn_checker checker);
  /// Waits for the pipelined transactions, then leaves the group.
  ~door_transactions();

  [[nodiscard]] caf::expected<txn_result>
  send_in_transaction(message m, const local_transaction& fn);
  void send_in_transaction_async(message m, local_transaction fn,
                                 transaction_producer::txn_callback cb);
  void flush();
  [[nodiscard]] caf::expected<txn_result> end(const std::string& txn_id,
                                              txn_outcome outcome);
  void store_halves_async(std::vector<message> ms,
                          transaction_producer::halves_callback cb);
  void end_many_async(std::vector<std::pair<std::string, txn_outcome>> ends,
                      transaction_producer::ends_callback cb);
  [[nodiscard]] uint64_t checks_answered() const;

  struct state;

private:
  explicit door_transactions(std::shared_ptr<state> st) : st_(std::move(st)) {
  }
  std::shared_ptr<state> st_;
};

} // namespace edda::client
