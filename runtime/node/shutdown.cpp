#include "node/shutdown.hpp"

#include "base/log.hpp"

#include <csignal>
#include <cstdio>
#include <pthread.h>
#include <unistd.h>

namespace edda::node {

namespace {

sigset_t shutdown_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

} // namespace

shutdown_signal::shutdown_signal(std::chrono::milliseconds grace)
  : grace_(grace) {
  auto set = shutdown_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([this] { run(); });
}

shutdown_signal::~shutdown_signal() {
  stopped();
  // The signal thread may be in sigwait: it ends with the process.
  thread_.detach();
}

void shutdown_signal::run() {
  auto set = shutdown_set();
  int sig = 0;
  sigwait(&set, &sig);
  EDDA_INFO("node", "signal " << sig << " received, stopping");
  {
    std::lock_guard<std::mutex> guard{mtx_};
    requested_ = true;
  }
  cv_.notify_all();
  // A second signal, or the grace period running out, ends the process.
  // A duplicate within a second is not a second signal: tools like
  // timeout(1) send SIGTERM to the process and to its group at once.
  auto first = std::chrono::steady_clock::now();
  std::thread second([set, first] {
    for (;;) {
      int again = 0;
      sigwait(&set, &again);
      if (std::chrono::steady_clock::now() - first < std::chrono::seconds(1))
        continue;
      std::fprintf(stderr, "edda: second signal %d: exiting now\n", again);
      _exit(1);
    }
  });
  second.detach();
  std::unique_lock<std::mutex> guard{mtx_};
  if (!cv_.wait_for(guard, grace_, [this] { return stopped_; })) {
    std::fprintf(stderr,
                 "edda: the node did not stop within %lld ms of signal %d; "
                 "exiting now (storage is crash-safe: nothing acknowledged "
                 "is lost)\n",
                 static_cast<long long>(grace_.count()), sig);
    _exit(1);
  }
}

void shutdown_signal::wait() {
  std::unique_lock<std::mutex> guard{mtx_};
  cv_.wait(guard, [this] { return requested_.load() || woken_; });
  woken_ = false;
}

void shutdown_signal::wake() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    woken_ = true;
  }
  cv_.notify_all();
}

void shutdown_signal::request() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    requested_ = true;
  }
  cv_.notify_all();
}

void shutdown_signal::stopped() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stopped_ = true;
  }
  cv_.notify_all();
}

} // namespace edda::node
