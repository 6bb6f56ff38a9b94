// inflight: requests an actor has in flight to another node (a client to
// its node, a node to a peer), so that losing that node fails them at once.
//
// CAF 0.17 does not fail a request when the connection under it drops: the
// requester waits for its own timeout (30 s by default), although the
// monitor's down message arrives within milliseconds. An actor keeps an
// `inflight` in its state, sends through it, and calls fail() when it
// learns the node is gone (its down handler, or a link-down notice): every
// request to that node gets its error handler run at once ("unavailable:
// connection lost ..."), and the late reply or timeout of such a request is
// then ignored.
//
// Confinement: one actor; use only from that actor's handlers.
#pragma once

#include "base/errc.hpp"

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/error.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

namespace edda {

class inflight {
public:
  /// self->request(dst, timeout, req) whose handlers run at most once: by
  /// the reply, by the error or timeout, or by fail(dst) first.
  template <class Reply, class Self, class Request, class OnReply,
            class OnError>
  void request(Self* self, const caf::actor& dst,
               std::chrono::milliseconds timeout, Request&& req,
               OnReply on_reply, OnError on_error) {
    auto id = next_++;
    pending_.emplace(id, entry{dst.address(), on_error});
    self->request(dst, timeout, std::forward<Request>(req))
      .then(
        [this, id, on_reply](Reply& r) mutable {
          if (pending_.erase(id) != 0)
            on_reply(r);
        },
        [this, id, on_error](caf::error& err) mutable {
          if (pending_.erase(id) != 0)
            on_error(err);
        });
  }

  /// Fails every request to `dst` now with `err` (they may or may not have
  /// been applied: the caller's error says so).
  void fail(const caf::actor_addr& dst, const caf::error& err) {
    for (auto i = pending_.begin(); i != pending_.end();) {
      if (i->second.dst != dst) {
        ++i;
        continue;
      }
      auto on_error = std::move(i->second.on_error);
      i = pending_.erase(i);
      auto copy = err;
      on_error(copy);
    }
  }

  [[nodiscard]] size_t size() const {
    return pending_.size();
  }

  /// The error fail() is called with when the node at `endpoint` is lost.
  [[nodiscard]] static caf::error lost(const std::string& endpoint) {
    return make_error(errc::unavailable,
                      "connection to " + endpoint
                        + " lost before the node answered; the request may "
                          "or may not have been applied");
  }

private:
  struct entry {
    caf::actor_addr dst;
    std::function<void(caf::error&)> on_error;
  };
  std::map<uint64_t, entry> pending_;
  uint64_t next_ = 0;
};

} // namespace edda
