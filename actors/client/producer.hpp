// producer: sends messages to a node and reports each one durable.
//
// Concurrent sends are coalesced: messages queue per partition and go out
// in batches (up to `max_batch` messages, at most `max_inflight_batches`
// batches per partition in flight), so many small sends cost few round
// trips and few commits. Order is kept per partition: the same key always
// maps to the same partition (FNV-1a of the key modulo the partition count),
// messages without a key go round robin. Adding partitions changes the
// mapping: the producer learns the new count from its next reply (every
// reply carries it) or within 2 s, so sends already in flight during an
// alter may use the old count.
//
// In a cluster (connect_options::direct_routing) each batch goes straight
// to its partition's home, by the cluster map the node hands out; keyless
// messages skip partitions whose home is down. A refused batch or one whose
// link dropped is sent once more through the node (see README, Routing).
//
// Over the client door (connect_options::door) the messages go out on one
// Produce stream, up to max_batch per request; the node routes them.
//
// Thread-safety: all member functions may be called from any thread.
// Callbacks of send_async run on a client thread (an actor's, or the door
// stream's reader): keep them short, and never destroy the producer there.
#pragma once

#include "client/connection.hpp"
#include "client/types.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <functional>
#include <memory>

namespace edda::client {

class door_producer;

struct producer_options {
  std::string group = "default-producer"; ///< producer group (transactions)
  size_t max_batch = 256;
  size_t max_inflight_batches = 1;         ///< per partition
  std::chrono::milliseconds timeout{30000}; ///< per batch, until durable
  uint64_t max_message_size = 4ull << 20;   ///< rejected before sending
};

class producer {
public:
  using callback = std::function<void(caf::expected<send_result>)>;

  explicit producer(connection conn, producer_options opts = {});
  /// Waits for outstanding sends, then stops.
  ~producer();
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;

  /// Queues `m`; `cb` gets the result once the node stored it durably, or
  /// the error: invalid_argument, message_too_large, unknown_topic,
  /// storage_full, unavailable, timeout.
  void send_async(message m, callback cb);

  /// Sends `m` and waits until it is durable (or failed).
  [[nodiscard]] caf::expected<send_result> send(message m);

  /// Waits until every send so far has its result.
  void flush();

  struct impl;

private:
  std::shared_ptr<impl> impl_;
  std::shared_ptr<door_producer> door_; // set: over the client door
};

} // namespace edda::client
