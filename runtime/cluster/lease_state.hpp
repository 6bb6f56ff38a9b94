// lease_state: what every movable duty of a node (a group coordinator)
// checks right before a side effect: that the lease it acts under is still
// the node's current one and is certainly alive. Written by the membership
// (cluster/membership.hpp) as it joins, renews, fences and rejoins; read by
// actors. A lease alone is not safety (receivers also check the fencing
// token), but a duty that may have lost its lease must not act at all.
//
// Thread-safety: all members may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace edda::cluster {

class lease_state {
public:
  /// The current incarnation (the join a duty starts under).
  [[nodiscard]] uint64_t incarnation() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return incarnation_;
  }
  /// True while `incarnation` is the current one and its lease is
  /// certainly alive (monotonic clock).
  [[nodiscard]] bool valid(uint64_t incarnation) const {
    std::lock_guard<std::mutex> guard{mtx_};
    return incarnation == incarnation_ && now_ns() < valid_until_ns_;
  }
  /// The membership joined or renewed: `incarnation` is alive until then.
  void set(uint64_t incarnation, int64_t valid_until_ns) {
    std::lock_guard<std::mutex> guard{mtx_};
    incarnation_ = incarnation;
    valid_until_ns_ = valid_until_ns;
  }
  /// The membership fenced itself or left: nothing is valid.
  void fence() {
    std::lock_guard<std::mutex> guard{mtx_};
    valid_until_ns_ = 0;
  }

  [[nodiscard]] static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
  }

private:
  mutable std::mutex mtx_;
  uint64_t incarnation_ = 0;
  int64_t valid_until_ns_ = 0;
};

} // namespace edda::cluster
