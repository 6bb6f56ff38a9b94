#include "sagas/remote.hpp"
#include "sagas/remote_door.hpp"
#include "sagas/step_call.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/connection_impl.hpp"
#include "wire/types.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <atomic>
#include <future>
#include <vector>

namespace edda::sagas {

namespace pb = wire::pb;

struct participant_host::impl {
  std::shared_ptr<client::connection_impl> conn;
  std::map<std::string, step_function> handlers;
  /// Set instead of `handlers`: start_async.
  std::map<std::string, async_step_function> async_handlers;
  host_options opts;
  std::atomic<uint64_t> served{0};
  std::vector<caf::actor> workers;
  std::shared_ptr<door_host> door; // set: over the client door
};

namespace {

struct worker_state {
  std::shared_ptr<participant_host::impl> impl;
  caf::actor frontend;
  bool stopping = false;
  /// Async steps open: their replies, by this worker's number.
  std::map<uint64_t, std::function<void(pb::StepReply)>> open;
  uint64_t next_open = 0;
  static inline const char* name = "edda.participant_host";
};

using worker_ptr = caf::stateful_actor<worker_state>*;

/// In a cluster a saga runs on its home node, which sends its steps to the
/// participants registered *there*: a host registers with every member
/// (again every 2 s: for members that joined or restarted since). Blocking
/// links: workers are detached actors.
/// The registration of the host's names.
pb::ParticipantRegister registration(const participant_host::impl& im) {
  pb::ParticipantRegister r;
  for (auto& [name, fn] : im.handlers)
    r.add_names(name);
  for (auto& [name, fn] : im.async_handlers)
    r.add_names(name);
  r.set_client_id(im.opts.client_id);
  r.set_batches(im.opts.batches);
  return r;
}

void register_everywhere(worker_ptr self) {
  auto& st = self->state;
  if (st.stopping || !st.frontend)
    return;
  auto r = registration(*st.impl);
  for (auto& [id, gw] : st.impl->conn->other_members(st.frontend))
    self->request(gw, st.impl->opts.timeout, r)
      .then([](const pb::ParticipantRegistered&) {},
            [](caf::error&) {
              // A node without sagas refuses (unknown_saga_type): fine.
            });
}

void register_with(worker_ptr self,
                   std::shared_ptr<std::promise<caf::error>> done) {
  auto& st = self->state;
  auto again = [=](const caf::error& err) {
    if (done) {
      done->set_value(err);
      return;
    }
    client::retry_after_pause(caf::actor_cast<caf::actor>(self));
  };
  auto fe = st.impl->conn->reconnect(st.frontend);
  if (!fe) {
    again(fe.error());
    return;
  }
  st.frontend = *fe;
  self->monitor(st.frontend);
  self->request(st.frontend, st.impl->opts.timeout, registration(*st.impl))
    .then(
      [=](const pb::ParticipantRegistered&) {
        register_everywhere(self);
        if (done)
          done->set_value(caf::error{});
      },
      [=](caf::error& err) { again(err); });
}

/// Runs one command through its handler.
pb::StepReply serve(participant_host::impl& im, const pb::StepCommand& c) {
  auto h = im.handlers.find(c.participant());
  if (h == im.handlers.end()) {
    pb::StepReply rep;
    rep.set_error("participant '" + c.participant() + "' is not served here");
    rep.set_retryable(true);
    return rep;
  }
  auto rep = call_step(h->second, c);
  im.served++;
  return rep;
}

/// Starts an async step; `reply` runs on this worker once its outcome came
/// back (wire::release_atom).
void serve_async(worker_ptr self, const pb::StepCommand& c,
                 std::function<void(pb::StepReply)> reply) {
  auto& st = self->state;
  auto h = st.impl->async_handlers.find(c.participant());
  if (h == st.impl->async_handlers.end()) {
    pb::StepReply rep;
    rep.set_error("participant '" + c.participant() + "' is not served here");
    rep.set_retryable(true);
    reply(std::move(rep));
    return;
  }
  auto id = ++st.next_open;
  st.open.emplace(id, std::move(reply));
  auto me = caf::actor_cast<caf::actor>(self);
  try {
    h->second(to_request(c), [me, id](step_result res) {
      caf::anon_send(me, wire::release_atom::value, id,
                     to_reply(std::move(res)));
    });
  } catch (const std::exception& e) {
    caf::anon_send(me, wire::release_atom::value, id,
                   to_reply(step_result::failure(
                     std::string("participant threw: ") + e.what())));
  } catch (...) {
    caf::anon_send(me, wire::release_atom::value, id,
                   to_reply(step_result::failure("participant threw")));
  }
}

caf::behavior worker(worker_ptr self,
                     std::shared_ptr<participant_host::impl> impl,
                     std::shared_ptr<std::promise<caf::error>> started) {
  self->state.impl = impl;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.stopping || !st.frontend || dm.source != st.frontend.address())
      return;
    EDDA_WARN("participant_host", "lost the node; registering again");
    client::retry_after_pause(caf::actor_cast<caf::actor>(self));
  });
  register_with(self, started);
  auto ticker = client::start_ticker(
    self->home_system(), caf::actor_cast<caf::actor>(self),
    std::chrono::seconds(2), caf::make_message(wire::flush_atom::value));
  self->attach_functor(
    [ticker] { caf::anon_send_exit(ticker, caf::exit_reason::user_shutdown); });
  return {
    [=](const pb::StepCommand& c) -> caf::result<pb::StepReply> {
      if (self->state.impl->async_handlers.empty())
        return serve(*self->state.impl, c);
      auto rp = self->make_response_promise<pb::StepReply>();
      serve_async(self, c,
                  [rp](pb::StepReply r) mutable { rp.deliver(std::move(r)); });
      return rp;
    },
    [=](const pb::StepBatch& b) -> caf::result<pb::StepBatchReply> {
      if (self->state.impl->async_handlers.empty()) {
        pb::StepBatchReply out;
        for (auto& c : b.commands())
          *out.add_replies() = serve(*self->state.impl, c);
        return out;
      }
      // Every command of the batch is open at once; the batch is answered
      // when the last outcome came.
      auto n = b.commands_size();
      auto acc = std::make_shared<pb::StepBatchReply>();
      for (int k = 0; k < n; ++k)
        acc->add_replies();
      if (n == 0)
        return *acc;
      auto rp = self->make_response_promise<pb::StepBatchReply>();
      auto left = std::make_shared<int>(n);
      for (int k = 0; k < n; ++k)
        serve_async(self, b.commands(k),
                    [rp, acc, left, k](pb::StepReply r) mutable {
                      *acc->mutable_replies(k) = std::move(r);
                      if (--*left == 0)
                        rp.deliver(std::move(*acc));
                    });
      return rp;
    },
    [=](wire::release_atom, uint64_t id, pb::StepReply& r) {
      auto& open = self->state.open;
      auto i = open.find(id);
      if (i == open.end())
        return;
      auto reply = std::move(i->second);
      open.erase(i);
      self->state.impl->served++;
      reply(std::move(r));
    },
    [=](wire::tick_atom) {
      if (!self->state.stopping)
        register_with(self, nullptr);
    },
    [=](wire::flush_atom) {
      if (!self->state.stopping)
        register_everywhere(self);
    },
    [=](wire::stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      // Async steps still open (their outcomes would come after this
      // worker is gone) fail now, retryably, instead of waiting out the
      // step timeout at the saga.
      auto open = std::move(st.open);
      st.open.clear();
      for (auto& [id, reply] : open) {
        pb::StepReply rep;
        rep.set_error("the participant host stopped before the outcome");
        rep.set_retryable(true);
        reply(std::move(rep));
      }
      self->quit();
    },
  };
}

} // namespace

participant_host::participant_host(std::shared_ptr<impl> i)
  : impl_(std::move(i)) {
}

namespace {

/// Why `handlers` and `opts` cannot start a host (none: they can); gives
/// `opts` a client id if it has none.
template <class Handlers>
caf::error prepare_host(const Handlers& handlers, host_options& opts) {
  if (handlers.empty())
    return make_error(errc::invalid_argument,
                      "a participant host needs at least one handler");
  for (auto& [name, fn] : handlers) {
    if (!valid_participant_name(name))
      return make_error(errc::invalid_argument,
                        "participant name '" + name
                          + "' must be 1-120 of [A-Za-z0-9_.-]");
    if (!fn)
      return make_error(errc::invalid_argument,
                        "participant '" + name + "' has no function");
  }
  if (opts.workers == 0)
    return make_error(errc::invalid_argument, "workers must be at least 1");
  if (opts.client_id.empty())
    opts.client_id = client::make_client_id("p");
  return caf::none;
}

} // namespace

caf::expected<std::unique_ptr<participant_host>>
participant_host::start(client::connection conn,
                        std::map<std::string, step_function> handlers,
                        host_options opts) {
  if (auto err = prepare_host(handlers, opts))
    return err;
  auto im = std::make_shared<impl>();
  im->conn = conn.impl();
  if (im->conn->door) {
    auto d = door_host::start(im->conn->door, std::move(handlers), opts);
    if (!d)
      return d.error();
    im->opts = std::move(opts);
    im->door = std::move(*d);
    return std::unique_ptr<participant_host>{new participant_host(im)};
  }
  im->handlers = std::move(handlers);
  im->opts = std::move(opts);
  return spawn_workers(im);
}

caf::expected<std::unique_ptr<participant_host>>
participant_host::start_async(client::connection conn,
                              std::map<std::string, async_step_function> handlers,
                              host_options opts) {
  if (auto err = prepare_host(handlers, opts))
    return err;
  auto im = std::make_shared<impl>();
  im->conn = conn.impl();
  if (im->conn->door)
    return make_error(errc::invalid_argument,
                      "async participant functions need a node-port or an "
                      "in-process connection, not the client door");
  im->async_handlers = std::move(handlers);
  im->opts = std::move(opts);
  return spawn_workers(im);
}

caf::expected<std::unique_ptr<participant_host>>
participant_host::spawn_workers(std::shared_ptr<impl> im) {
  std::unique_ptr<participant_host> host{new participant_host(im)};
  for (uint32_t i = 0; i < im->opts.workers; ++i) {
    auto started = std::make_shared<std::promise<caf::error>>();
    auto fut = started->get_future();
    // Detached: a step may block on the application's own store.
    im->workers.push_back(
      im->conn->sys->spawn<caf::detached>(worker, im, started));
    if (auto err = fut.get())
      return err; // the destructor stops the workers
  }
  return host;
}

participant_host::~participant_host() {
  impl_->door.reset(); // over the door: ends its streams
  for (auto& w : impl_->workers)
    client::stop_and_wait(*impl_->conn->sys, w,
                          caf::make_message(wire::stop_atom::value));
  impl_->workers.clear();
}

uint64_t participant_host::served() const {
  if (impl_->door)
    return impl_->door->served();
  return impl_->served.load();
}

} // namespace edda::sagas
