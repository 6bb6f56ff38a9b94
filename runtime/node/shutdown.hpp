// shutdown_signal: SIGINT and SIGTERM stop a node at every moment of its
// life, also while it starts (opening storage, waiting for etcd) or while it
// stops. The constructor blocks both signals in the calling thread (so every
// thread started later inherits the mask) and starts one thread that takes
// them with sigwait.
//
// After the first signal, `requested()` is true and wait() returns; the node
// then has `grace` to stop. If it has not called stopped() by then, the
// signal thread says so and ends the process at once with exit code 1: LMDB
// is crash-safe, so nothing acknowledged is lost, and an operator's SIGTERM
// is never ignored. A second signal (a second or more after the first) ends
// the process at once.
//
// Construct it first thing in main, before any other thread exists.
// Thread-safety: all members may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace edda::node {

class shutdown_signal {
public:
  explicit shutdown_signal(
    std::chrono::milliseconds grace = std::chrono::seconds(10));
  ~shutdown_signal();
  shutdown_signal(const shutdown_signal&) = delete;
  shutdown_signal& operator=(const shutdown_signal&) = delete;

  /// True once SIGINT or SIGTERM arrived.
  [[nodiscard]] bool requested() const {
    return requested_.load();
  }
  /// The flag itself, for start loops that must give up on a signal.
  [[nodiscard]] const std::atomic<bool>* flag() const {
    return &requested_;
  }
  /// Blocks until a signal arrived (or request() was called).
  void wait();
  /// Ends wait() as a signal would, without the grace timer: for a node
  /// that stopped on its own (start_options::on_fatal).
  void request();
  /// Ends one wait() without asking the process to stop (requested()
  /// stays false): for a node to start again (its group moved away).
  void wake();
  /// The node has stopped: no forced exit.
  void stopped();

private:
  void run();

  std::chrono::milliseconds grace_;
  std::atomic<bool> requested_{false};
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stopped_ = false;
  bool woken_ = false;
  std::thread thread_;
};

} // namespace edda::node
