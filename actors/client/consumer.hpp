// consumer: a member of a consumer group. Partitions push batches of
// messages (filtered by the tag expression at the node); the handler runs
// on the consumer's own thread, one message at a time; the results go back
// as one ack batch per delivered batch.
//
// * clustering (default): each message goes to one live member; partitions
//   are rebalanced as members join, leave or die.
// * broadcast: every member gets every message, with its own offsets.
// A handler that returns retry_later or throws fails that delivery: the
// message comes back after the next delay level (1s 5s 10s 30s 1m ...), and
// after max_reconsume failures it moves to the group's DLQ (%DLQ%<group>)
// and an alert is raised. A delivery not acknowledged within the node's
// consume_timeout counts as failed.
//
// Over the client door (connect_options::door) the consumer holds one
// Consume stream (subscribed again after it ends); the node's door is the
// group's member. There the counters have no acks_durable / acked_durable
// (the door does not confirm settlements), and received::replaces is 0 (a
// superseded number is refused by the node, and settle() does not know it).
//
// Thread-safety: start/stop/counters from any thread. The handler is only
// ever called from the consumer's thread.
#pragma once

#include "client/connection.hpp"
#include "client/types.hpp"

#include <caf/expected.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

namespace edda::client {

class door_consumer;

struct consumer_options {
  std::string group;
  std::string topic;
  std::string expression = "*";   ///< "*", "TagA", "TagA || TagC"
  consume_mode mode = consume_mode::clustering;
  consume_from from = consume_from::earliest; ///< for a group's first start
  std::string client_id;          ///< stable per instance; default host-pid-n
  /// Where the consumer runs, as `edda group describe` shows it; default
  /// "HOST pid PID" ("in-process" in the node's own process).
  std::string address;
  uint32_t max_reconsume = 0;     ///< 0 = the node's setting for the group
  std::vector<uint64_t> retry_delays_ms; ///< empty = the node's setting
  std::chrono::milliseconds request_timeout{30000};
  /// The handler may return consume_result::deferred (settled later with
  /// settle()): each delivery is then numbered and held, which costs a
  /// little per message. Without it a deferred result counts as a failure.
  bool allow_deferred = false;
};

using handler = std::function<consume_result(const received&)>;

/// The outcome of a deferred delivery (consume_result::deferred).
struct settlement {
  uint64_t delivery = 0;       ///< received::delivery
  consume_result result = consume_result::success; ///< not deferred
  std::string reason;          ///< for retry_later: kept as last_error
};

struct consumer_counters {
  uint64_t delivered = 0;  ///< handler invocations
  uint64_t succeeded = 0;
  uint64_t failed = 0;     ///< retry_later or exception
  uint64_t acks_durable = 0; ///< ack batches the node confirmed durable
  uint64_t acked_durable = 0; ///< successful messages whose ack is durable
  uint64_t reconnects = 0;
};

class consumer {
public:
  /// Subscribes and starts consuming. Errors: unknown_topic,
  /// invalid_tag_expression, subscription_conflict, invalid_argument,
  /// unavailable.
  [[nodiscard]] static caf::expected<std::unique_ptr<consumer>>
  start(connection conn, consumer_options opts, handler h);

  /// Leaves the group (its partitions go to the other members) and stops.
  ~consumer();
  void stop();

  /// Settles deliveries the handler deferred (from any thread; does not
  /// wait for the node). Returns the numbers it does not hold: settled
  /// before, superseded by a redelivery (received::replaces), or never
  /// deferred; those are ignored.
  std::vector<uint64_t> settle(const std::vector<settlement>& batch);
  [[nodiscard]] consumer_counters counters() const;
  [[nodiscard]] const std::string& client_id() const;

  struct impl;

private:
  explicit consumer(std::shared_ptr<impl> i);
  std::shared_ptr<impl> impl_;
  std::shared_ptr<door_consumer> door_; // set: over the client door
};

} // namespace edda::client
