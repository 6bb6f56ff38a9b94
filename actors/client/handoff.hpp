// handoff: how user threads pass work to a client actor. Items queue under
// a mutex; the first push after a take signals the actor (one drain message
// for any number of items), and `outstanding` counts items until the actor
// reports them done, so that flush() can wait for everything sent so far.
#pragma once

#include <condition_variable>
#include <mutex>
#include <vector>

namespace edda::client {

template <class T>
struct handoff {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<T> items;
  bool signaled = false;
  size_t outstanding = 0; // queued or in flight, not yet done

  /// Queues `x`; true if the caller must send the actor a drain message.
  bool push(T x) {
    std::lock_guard<std::mutex> guard{mtx};
    items.push_back(std::move(x));
    ++outstanding;
    if (signaled)
      return false;
    signaled = true;
    return true;
  }

  /// Everything queued so far (called by the actor on drain).
  std::vector<T> take() {
    std::vector<T> out;
    std::lock_guard<std::mutex> guard{mtx};
    out.swap(items);
    signaled = false;
    return out;
  }

  void done(size_t n) {
    std::lock_guard<std::mutex> guard{mtx};
    outstanding -= n;
    if (outstanding == 0)
      cv.notify_all();
  }

  void wait_idle() {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return outstanding == 0; });
  }
};

} // namespace edda::client
