// A single-member etcd for a cluster test: started as a child process on free
// 127.0.0.1 ports with its data dir in a new temp dir, ready when a client
// read succeeds, stopped by pid. Never uses or touches a system etcd. The
// ports come from free_port() (support/util.hpp): below the ephemeral
// range, so that a client reconnecting while etcd is down cannot take its
// port (TCP simultaneous open) before restart().
//
// Faults: stop() (SIGTERM, then SIGKILL), kill9(), pause() (SIGSTOP),
// resume() (SIGCONT), and restart() on the same ports and data dir.
//
// Thread-safety: none; one test thread drives it. etcd is started with
// PR_SET_PDEATHSIG, so it dies with the thread that (re)started it.
//
// Errors: start() and restart() return unavailable with the tail of etcd's
// log when etcd exits or does not answer within 10 s.
#pragma once

#include "support/util.hpp" // free_port()

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace edda::test {

class etcd_process {
public:
  /// Starts etcd and waits until it answers. Retries with new ports if
  /// they were taken in between.
  [[nodiscard]] static caf::expected<std::unique_ptr<etcd_process>> start();

  /// Stops etcd (stop()) and removes the temp dir.
  ~etcd_process();
  etcd_process(const etcd_process&) = delete;
  etcd_process& operator=(const etcd_process&) = delete;

  /// "http://127.0.0.1:PORT", for coord::etcd_options::endpoints.
  [[nodiscard]] std::string endpoint() const;
  [[nodiscard]] uint16_t client_port() const {
    return client_port_;
  }
  [[nodiscard]] const std::string& data_dir() const {
    return data_dir_;
  }
  /// 0 when not running.
  [[nodiscard]] pid_t pid() const {
    return pid_;
  }

  /// SIGTERM (and SIGCONT, in case it is paused), SIGKILL after 5 s; waits
  /// for the exit. No-op when not running.
  void stop();
  /// SIGKILL and wait for the exit.
  void kill9();
  /// SIGSTOP: etcd keeps its connections but answers nothing. Returns
  /// once it is stopped.
  void pause();
  /// SIGCONT; returns once it runs again.
  void resume();
  /// Starts etcd again on the same ports and data dir (after stop() or
  /// kill9()) and waits until it answers.
  [[nodiscard]] caf::error restart();

  /// Runs etcdctl (3.4: API v3) against this etcd, e.g. {"compact", "5"}; its
  /// stdout, or an error with its output when it exits non-zero.
  [[nodiscard]] caf::expected<std::string>
  etcdctl(const std::vector<std::string>& args) const;

  /// The last `max_bytes` of etcd's log, for failure messages.
  [[nodiscard]] std::string log_tail(size_t max_bytes = 4000) const;

private:
  etcd_process() = default;

  /// Spawns etcd; waits until it answers or exits.
  [[nodiscard]] caf::error launch();

  std::string dir_;
  std::string data_dir_;
  std::string log_path_;
  uint16_t client_port_ = 0;
  uint16_t peer_port_ = 0;
  pid_t pid_ = 0;
  bool exited_during_start_ = false;
};

} // namespace edda::test
