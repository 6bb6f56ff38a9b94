// How a message's partition is chosen, by the node (topic manager) and by a
// client that routes by the cluster map (producer): both call this, so a
// key maps to the same partition wherever the choice is made.
//
// Pure and header-only; no CAF. Thread-safety: none needed (the turn
// counter belongs to the caller).
#pragma once

#include "base/ids.hpp"

#include <cstdint>
#include <string>

namespace edda {

struct partition_choice {
  enum status_t : uint8_t {
    ok = 0,        ///< `partition` is the one
    home_down = 1, ///< keyed: the key's partition has no live home
    none_live = 2, ///< keyless: no partition has a live home
    empty = 3,     ///< the topic has no partitions
  };
  uint32_t partition = 0; ///< also set for home_down: the key's partition
  status_t status = ok;
};

/// Among `n` partitions: a key's own (shard_of(key, n)), which must be
/// available (per-key order: never another one); without a key the next in
/// turn (`turn` advances) that is available, skipping the others.
/// `available(p)` says whether partition p's home is live and reachable.
template <class Available>
[[nodiscard]] partition_choice choose_partition(const std::string& key,
                                                uint32_t n, uint32_t& turn,
                                                Available&& available) {
  partition_choice c;
  if (n == 0) {
    c.status = partition_choice::empty;
    return c;
  }
  if (!key.empty()) {
    c.partition = shard_of(key, n);
    if (!available(c.partition))
      c.status = partition_choice::home_down;
    return c;
  }
  for (uint32_t k = 0; k < n; ++k) {
    auto p = turn++ % n;
    if (available(p)) {
      c.partition = p;
      return c;
    }
  }
  c.status = partition_choice::none_live;
  return c;
}

} // namespace edda
