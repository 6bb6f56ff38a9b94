// Idempotency helper: process a business key at most once, using the
// node's `dedup` store (same LMDB as the messages, acknowledged durable).
//
//   idempotency idem{conn, "target-fund"};
//   auto r = idem.run_once(order_id, [&] { return buy(order_id); });
//
// run_once runs `fn` only if the key was never marked done within the
// retention window (idempotency.retention on the node), then marks it.
// If the process dies between `fn` and the mark, `fn` may run again: make
// the effect itself idempotent or use a transactional step.
#pragma once

#include "client/connection.hpp"

#include <caf/expected.hpp>

#include <functional>
#include <string>

namespace edda::client {

class idempotency {
public:
  idempotency(connection conn, std::string scope);

  /// True if `key` was already processed (and not yet expired).
  [[nodiscard]] caf::expected<bool> done(const std::string& key) const;
  /// Records `key` as processed, durably.
  [[nodiscard]] caf::error mark(const std::string& key,
                                const std::string& result = {}) const;
  /// Runs `fn` unless `key` is done; returns true if it ran. An exception
  /// from `fn` propagates and the key stays unmarked.
  [[nodiscard]] caf::expected<bool> run_once(const std::string& key,
                                             const std::function<void()>& fn)
    const;

private:
  connection conn_;
  std::string scope_;
};

} // namespace edda::client
