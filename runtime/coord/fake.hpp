// An in-memory coordination store with etcd v3's semantics (coord.hpp), for
// unit tests: revisions, create/mod revisions, leases with TTLs on a clock
// the test controls, compare-and-swap, prefix watches in revision order.
//
// Several clients may share one store (two "nodes" racing for a key); a
// client can be cut off (its calls fail with `unavailable`, its watches end)
// to test an unreachable store.
//
// Thread-safety: all members may be called from any thread.
#pragma once

#include "coord/coord.hpp"

#include <chrono>
#include <memory>

namespace edda::coord {

class fake_store {
public:
  fake_store();
  ~fake_store();
  fake_store(const fake_store&) = delete;
  fake_store& operator=(const fake_store&) = delete;

  /// A new client of this store (the store outlives it or not: both work).
  [[nodiscard]] client_ptr connect();

  /// Moves the store's clock forward; leases whose TTL ran out since their
  /// last keepalive expire (their keys are deleted, watchers see it), in the
  /// order of their deadlines, one revision each (none for a lease without
  /// keys).
  void advance(std::chrono::milliseconds d);

  /// Cuts `c` off (true) or reconnects it (false). A cut client's calls fail
  /// with unavailable and its watches end with on_error.
  void cut(const client_ptr& c, bool cut_off);

  /// Forgets the revisions before `revision`: a watch from below it fails
  /// with errc::compacted; from `revision` itself it still replays (as in
  /// etcd, which keeps the compaction revision).
  void compact(int64_t revision);

  /// The current store revision.
  [[nodiscard]] int64_t revision() const;

  struct state;

private:
  std::shared_ptr<state> state_;
};

} // namespace edda::coord
