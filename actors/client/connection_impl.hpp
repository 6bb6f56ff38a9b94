// Internal: what a connection holds. Includes CAF; not for user code.
#pragma once

#include "client/connection.hpp"
#include "client/door_link.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "base/errc.hpp"

#include <google/protobuf/message.h>

#include <atomic>
#include <future>
#include <type_traits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace edda::client {

struct connection_impl {
  std::unique_ptr<caf::actor_system_config> own_cfg; // remote only
  std::unique_ptr<caf::actor_system> own_sys;        // remote only
  caf::actor_system* sys = nullptr;
  std::string host; // remote only
  uint16_t port = 0;
  std::string endpoint;
  connect_options opts;
  /// Set: a remote connection over the node's client door (no actor system
  /// then: sys is null, and calls go through door_unary).
  std::shared_ptr<door_link> door;
  ~connection_impl();

  /// The node's frontend as last connected (thread-safe).
  [[nodiscard]] caf::actor frontend() const;
  /// Remote: connects again if `stale` is still the current handle (so that
  /// many actors noticing the same loss reconnect once), or if the node was
  /// lost. After a loss the new handle must answer a status request first
  /// (CAF may return its cached proxy of the dead node); if it does not,
  /// the result is unavailable: try later. Local: no-op.
  /// Errors: unavailable.
  [[nodiscard]] caf::expected<caf::actor> reconnect(const caf::actor& stale);
  void set_frontend(caf::actor fe);

  /// Cluster: the gateway of the node at `endpoint` ("host:port"), from a
  /// cache or connected now (blocking: call from a detached actor or a
  /// user thread). A new link answers a status request before it is used.
  /// Errors: unavailable.
  [[nodiscard]] caf::expected<caf::actor> link(const std::string& endpoint);
  /// Forgets the cached link `gateway` (it went down).
  void forget_link(const caf::actor_addr& gateway);

  /// Cluster: the gateways of the other members as the node behind `fe`
  /// lists them, linked now (blocking); members that cannot be reached are
  /// left out. Empty on a single node. For client actors that must be known
  /// by every node (transaction checkers, participant hosts) and consumers,
  /// which take deliveries from every node.
  [[nodiscard]] std::vector<std::pair<std::string, caf::actor>>
  other_members(const caf::actor& fe);

  /// The links, shared with the actor that forgets a link when its node
  /// goes down.
  struct link_table {
    std::mutex mtx;
    std::map<std::string, caf::actor> by_endpoint;
    caf::actor watcher; // monitors every link (spawned on first use)
  };

private:
  mutable std::mutex mtx_;
  caf::actor frontend_;
  std::shared_ptr<link_table> links_ = std::make_shared<link_table>();

public:

  /// Set when the watched frontend went down (remote connections).
  std::shared_ptr<std::atomic<bool>> lost
    = std::make_shared<std::atomic<bool>>(false);
  caf::actor watcher; // monitors the current frontend (remote only)

  /// Sends `req` to the node and waits for the reply of type Reply. After
  /// the node was lost, reconnects first (a dead proxy would only time out).
  /// If the connection drops while the request is out, the call fails at
  /// once with unavailable (CAF 0.17 would wait for the timeout).
  template <class Reply, class Request>
  caf::expected<Reply> call(const Request& req,
                            std::chrono::milliseconds timeout) {
    auto done = std::make_shared<std::promise<caf::expected<Reply>>>();
    auto result = done->get_future();
    call_async<Reply>(req, timeout, [done](caf::expected<Reply> r) {
      done->set_value(std::move(r));
    });
    return result.get();
  }

  /// The same without waiting: `then` runs once, on an actor thread, with
  /// the reply or the error (keep it short; it must not block). Reconnects
  /// first after a loss, as call() does (blocking only then, and only for
  /// remote connections). Over the client door it blocks: `then` runs on
  /// the caller's thread before this returns.
  template <class Reply, class Request, class Then>
  void call_async(const Request& req, std::chrono::milliseconds timeout,
                  Then then) {
    if (door) {
      auto t = std::make_shared<Then>(std::move(then));
      if constexpr (std::is_base_of_v<google::protobuf::Message, Request>
                    && std::is_base_of_v<google::protobuf::Message, Reply>) {
        auto reply = std::make_shared<Reply>();
        door_unary(door, req, reply.get(), timeout,
                   [t, reply](caf::error err) {
                     if (err)
                       (*t)(caf::expected<Reply>{std::move(err)});
                     else
                       (*t)(caf::expected<Reply>{std::move(*reply)});
                   });
      } else {
        (*t)(caf::expected<Reply>{make_error(
          errc::invalid_argument, "not a request of the client door")});
      }
      return;
    }
    auto fe = frontend();
    if (lost->load()) {
      auto again = reconnect(fe);
      if (!again) {
        then(caf::expected<Reply>{again.error()});
        return;
      }
      fe = *again;
    }
    auto where = endpoint;
    sys->spawn([fe, req, timeout, then = std::move(then),
                where](caf::event_based_actor* self) mutable {
      // Settled once: by the reply, the error, or the loss of the node.
      auto settled = std::make_shared<bool>(false);
      auto done = std::make_shared<Then>(std::move(then));
      self->monitor(fe);
      self->set_down_handler([=](caf::down_msg&) {
        if (std::exchange(*settled, true))
          return;
        (*done)(caf::expected<Reply>{make_error(
          errc::unavailable, "connection to " + where
                               + " lost before the node answered; the "
                                 "request may or may not have been applied")});
        self->quit();
      });
      self->request(fe, timeout, req)
        .then(
          [=](Reply& r) {
            if (std::exchange(*settled, true))
              return;
            (*done)(caf::expected<Reply>{std::move(r)});
            self->quit();
          },
          [=](caf::error& err) {
            if (std::exchange(*settled, true))
              return;
            (*done)(caf::expected<Reply>{std::move(err)});
            self->quit();
          });
    });
  }
};

/// Sends `stop` to `a` (an exit if it is empty) and waits up to 10 s until
/// `a` has terminated. Client objects call this before they release their
/// connection: an actor holding the last reference would otherwise destroy
/// the actor system from inside itself.
void stop_and_wait(caf::actor_system& sys, const caf::actor& a,
                   caf::message stop);

/// For detached client actors: waits 500 ms on the actor's own thread, then
/// sends `tick_atom` to it. Not delayed_send: a pending entry in CAF 0.17's
/// clock holds a strong reference that keeps a stopped actor's thread, and
/// so the destruction of its connection's actor system, waiting.
void retry_after_pause(caf::actor self);

/// For detached client actors that need a periodic message: a small
/// event-based actor that sends `msg` to `target` every `period`, holding
/// only a weak reference (a delayed_send to a detached actor would keep its
/// thread, and its connection's teardown, waiting up to `period`). It ends
/// when `target` is gone; send it an exit to stop it earlier.
[[nodiscard]] caf::actor start_ticker(caf::actor_system& sys,
                                      const caf::actor& target,
                                      std::chrono::milliseconds period,
                                      caf::message msg);

/// A client id unique on this host: "<host>-<pid>-<tag><n>".
[[nodiscard]] std::string make_client_id(const char* tag);

/// Wraps an in-process node's frontend.
[[nodiscard]] connection make_local_connection(caf::actor_system& sys,
                                               caf::actor frontend);

/// CAF settings every edda client and node uses (scheduler, heartbeats).
void apply_runtime_settings(caf::actor_system_config& cfg,
                            const std::string& policy, uint32_t max_threads,
                            std::chrono::milliseconds heartbeat,
                            std::chrono::milliseconds connection_timeout);

} // namespace edda::client
