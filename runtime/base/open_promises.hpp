// open_promises: the requests an actor took and has not answered yet, so
// that they are answered with an error the moment the actor ends.
//
// CAF 0.17 sends nothing for a response promise that is dropped unanswered
// (0.18 added `broken_promise`): a client whose produce was waiting for the
// writer when its partition died (the topic manager restarted, the node's
// supervisor restarted a service) waited for its own timeout, 30 s by
// default, blocking every later send of that client. An actor keeps an
// `open_promises` from attach() in its state and answers through keep():
//
//   st.open = open_promises::attach(self, "orders/0");
//   auto rp = self->make_response_promise<pb::ProduceResult>();
//   auto kept = st.open->keep(rp);      // answered by kept.deliver(...)
//   ...
//   return rp;
//
// When the actor ends (any reason, kill included) every promise still open
// gets `unavailable: <who> ended (<reason>) before answering; the request
// may or may not have been applied`, like a lost connection (inflight.hpp):
// a write may have been committed by the writer meanwhile, so the caller
// must not take the error for "not stored".
//
// Confinement: one actor; keep() and deliver() only from its handlers; the
// exit hook runs in the actor's own cleanup (after its state is gone, hence
// the shared_ptr).
#pragma once

#include "base/errc.hpp"

#include <caf/error.hpp>
#include <caf/local_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/typed_response_promise.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

namespace edda {

class open_promises : public std::enable_shared_from_this<open_promises> {
public:
  /// One promise kept open: deliver() answers it once (later calls, or a
  /// call after the actor ended and answered it, do nothing).
  class kept {
  public:
    kept() = default;

    template <class... Ts>
    void deliver(Ts&&... xs) {
      auto reg = reg_.lock();
      if (!reg)
        return;
      auto i = reg->open_.find(id_);
      if (i == reg->open_.end())
        return;
      auto rp = std::move(i->second);
      reg->open_.erase(i);
      rp.deliver(std::forward<Ts>(xs)...);
    }

  private:
    friend class open_promises;
    kept(std::weak_ptr<open_promises> reg, uint64_t id)
      : reg_(std::move(reg)), id_(id) {
    }
    std::weak_ptr<open_promises> reg_;
    uint64_t id_ = 0;
  };

  /// A registry for `self` whose open promises are failed when it ends;
  /// `who` names the actor in that error ("partition orders/0").
  static std::shared_ptr<open_promises> attach(caf::local_actor* self,
                                               std::string who) {
    auto reg = std::shared_ptr<open_promises>(new open_promises(std::move(who)));
    self->attach_functor(
      [reg](const caf::error& reason) { reg->fail_all(reason); });
    return reg;
  }

  kept keep(caf::response_promise rp) {
    auto id = next_++;
    open_.emplace(id, std::move(rp));
    return kept{weak_from_this(), id};
  }

  template <class T>
  kept keep(caf::typed_response_promise<T> rp) {
    return keep(static_cast<caf::response_promise&>(rp));
  }

  [[nodiscard]] size_t size() const {
    return open_.size();
  }

  /// Answers every open promise with the error of an actor that ended.
  void fail_all(const caf::error& reason) {
    auto open = std::move(open_);
    open_.clear();
    auto why = reason ? render(reason) : std::string{"stopped"};
    for (auto& [id, rp] : open)
      rp.deliver(make_error(errc::unavailable,
                            who_ + " ended (" + why
                              + ") before answering; the request may or may "
                                "not have been applied"));
  }

private:
  explicit open_promises(std::string who) : who_(std::move(who)) {
  }

  std::string who_;
  std::map<uint64_t, caf::response_promise> open_;
  uint64_t next_ = 0;
};

} // namespace edda
