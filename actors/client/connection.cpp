#include "client/connection_impl.hpp"

#include "base/errc.hpp"
#include "base/node_link.hpp"
#include "wire/types.hpp"

#include <caf/atom.hpp>
#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/timespan.hpp>
#include <caf/weak_intrusive_ptr.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace edda::client {

namespace {
// Teardowns of remote connections' actor systems in progress. CAF 0.17 can
// stall ~actor_system (a terminated detached actor still referenced by a
// pending clock entry); the caller must never hang on that, so the system
// is destroyed on a background thread and the process waits at exit (at
// most 2 s) for teardowns still running.
std::mutex teardown_mtx;
std::condition_variable teardown_cv;
int teardowns = 0;

void wait_for_teardowns() {
  std::unique_lock<std::mutex> guard{teardown_mtx};
  teardown_cv.wait_for(guard, std::chrono::seconds(2),
                       [] { return teardowns == 0; });
}
} // namespace

connection_impl::~connection_impl() {
  if (watcher)
    caf::anon_send_exit(watcher, caf::exit_reason::user_shutdown);
  {
    std::lock_guard<std::mutex> guard{links_->mtx};
    if (links_->watcher)
      caf::anon_send_exit(links_->watcher, caf::exit_reason::user_shutdown);
    links_->watcher = nullptr;
    links_->by_endpoint.clear();
  }
  watcher = nullptr;
  frontend_ = nullptr;
  if (own_sys) {
    {
      std::lock_guard<std::mutex> guard{teardown_mtx};
      static bool registered = false;
      if (!registered) {
        registered = true;
        std::atexit(wait_for_teardowns);
      }
      ++teardowns;
    }
    std::thread([sys = std::move(own_sys), cfg = std::move(own_cfg)]() mutable {
      sys.reset();
      cfg.reset();
      std::lock_guard<std::mutex> guard{teardown_mtx};
      --teardowns;
      teardown_cv.notify_all();
    }).detach();
  }
  // own_sys (if any) is destroyed here, after every client actor is gone.
}

caf::actor connection_impl::frontend() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return frontend_;
}

void connection_impl::set_frontend(caf::actor fe) {
  std::lock_guard<std::mutex> guard{mtx_};
  frontend_ = std::move(fe);
}

caf::expected<caf::actor> connection_impl::reconnect(const caf::actor& stale) {
  if (!own_sys)
    return frontend();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (frontend_ && frontend_ != stale && !lost->load())
      return frontend_;
  }
  auto fe = sys->middleman().remote_actor(host, port);
  if (!fe)
    return make_error(errc::unavailable,
                      "cannot reach an edda node at " + endpoint + " ("
                        + sys->render(fe.error())
                        + "); is `edda node` running?");
  if (lost->load()) {
    // CAF may hand back its cached proxy of a dead node, or a live one of a
    // node that resumed (same identity): only an answer tells them apart.
    bool alive = false;
    caf::scoped_actor self{*sys};
    self->request(*fe, std::chrono::seconds(2), wire::pb::NodeStatusRequest{})
      .receive([&](const wire::pb::NodeStatus&) { alive = true; },
               [&](caf::error&) {});
    if (!alive)
      return make_error(errc::unavailable,
                        "the node at " + endpoint + " is still unreachable");
  }
  set_frontend(*fe);
  lost->store(false);
  caf::anon_send(watcher, *fe);
  return *fe;
}

caf::expected<caf::actor> connection_impl::link(const std::string& ep) {
  auto table = links_;
  {
    std::lock_guard<std::mutex> guard{table->mtx};
    if (auto i = table->by_endpoint.find(ep); i != table->by_endpoint.end())
      return i->second;
  }
  std::string h;
  uint16_t p = 0;
  if (!parse_endpoint(ep, h, p, 7420))
    return make_error(errc::invalid_argument,
                      "'" + ep + "' is not host:port");
  auto gw = remote_node(*sys, h, p); // a node with TLS links over it
  if (!gw)
    return make_error(errc::unavailable, "cannot reach the edda node at " + ep
                                           + " (" + sys->render(gw.error())
                                           + ")");
  // CAF may hand back a cached proxy of a node that went away: only an
  // answer tells.
  bool alive = false;
  {
    caf::scoped_actor self{*sys};
    self->request(*gw, std::chrono::seconds(2), wire::pb::NodeStatusRequest{})
      .receive([&](const wire::pb::NodeStatus&) { alive = true; },
               [&](caf::error&) {});
  }
  if (!alive)
    return make_error(errc::unavailable,
                      "the node at " + ep + " does not answer");
  std::lock_guard<std::mutex> guard{table->mtx};
  if (!table->watcher) {
    // Forgets a link when its node goes down, so that the next link()
    // connects anew (to the restarted node).
    std::weak_ptr<link_table> weak = table;
    table->watcher = sys->spawn([weak](caf::event_based_actor* w) {
      w->set_down_handler([=](caf::down_msg& dm) {
        if (auto t = weak.lock()) {
          std::lock_guard<std::mutex> guard{t->mtx};
          for (auto i = t->by_endpoint.begin(); i != t->by_endpoint.end();)
            if (i->second.address() == dm.source)
              i = t->by_endpoint.erase(i);
            else
              ++i;
        }
      });
      return caf::behavior{[=](caf::actor& a) { w->monitor(a); }};
    });
  }
  table->by_endpoint[ep] = *gw;
  caf::anon_send(table->watcher, *gw);
  return *gw;
}

std::vector<std::pair<std::string, caf::actor>>
connection_impl::other_members(const caf::actor& fe) {
  std::vector<std::pair<std::string, caf::actor>> out;
  if (!fe)
    return out;
  caf::expected<wire::pb::ClusterStatus> cs{wire::pb::ClusterStatus{}};
  {
    caf::scoped_actor self{*sys};
    wire::pb::ClusterStatusRequest q;
    q.set_brief(true); // the node's view, no etcd reads
    self->request(fe, std::chrono::seconds(5), q)
      .receive([&](wire::pb::ClusterStatus& x) { cs = std::move(x); },
               [&](caf::error& err) { cs = std::move(err); });
  }
  if (!cs || !cs->clustered())
    return out;
  for (auto& m : cs->members()) {
    if (m.self())
      continue;
    if (auto gw = link(m.endpoint()))
      out.emplace_back(m.node_id(), *gw);
  }
  return out;
}

void connection_impl::forget_link(const caf::actor_addr& gateway) {
  std::lock_guard<std::mutex> guard{links_->mtx};
  auto& m = links_->by_endpoint;
  for (auto i = m.begin(); i != m.end();)
    if (i->second.address() == gateway)
      i = m.erase(i);
    else
      ++i;
}

connection::connection(std::shared_ptr<connection_impl> impl)
  : impl_(std::move(impl)) {
}

std::string connection::endpoint() const {
  return impl_->endpoint;
}

void apply_runtime_settings(caf::actor_system_config& cfg,
                            const std::string& policy, uint32_t max_threads,
                            std::chrono::milliseconds heartbeat,
                            std::chrono::milliseconds connection_timeout) {
  cfg.set("scheduler.policy", caf::atom_from_string(policy));
  if (max_threads > 0)
    cfg.set("scheduler.max-threads", static_cast<size_t>(max_threads));
  cfg.set("middleman.workers", static_cast<size_t>(0));
  cfg.set("middleman.heartbeat-interval", caf::timespan{heartbeat});
  if (heartbeat.count() > 0)
    cfg.set("middleman.connection-timeout", caf::timespan{connection_timeout});
}

caf::expected<connection> connection::open(const std::string& host,
                                           uint16_t port,
                                           connect_options opts) {
  auto impl = std::make_shared<connection_impl>();
  if (opts.door) {
    auto link = open_door(host, port, opts);
    if (!link)
      return link.error();
    impl->door = std::move(*link);
    impl->opts = opts;
    impl->endpoint = host + ":" + std::to_string(port);
    impl->host = host;
    impl->port = port;
    return connection{impl};
  }
  impl->own_cfg = std::make_unique<caf::actor_system_config>();
  auto& cfg = *impl->own_cfg;
  wire::register_types(cfg);
  cfg.load<caf::io::middleman>();
  apply_runtime_settings(cfg, "sharing", 2, opts.heartbeat,
                         opts.connection_timeout);
  impl->own_sys = std::make_unique<caf::actor_system>(cfg);
  impl->sys = impl->own_sys.get();
  impl->opts = opts;
  impl->endpoint = host + ":" + std::to_string(port);
  impl->host = host;
  impl->port = port;
  // The watcher marks the connection lost when the node goes away, so that
  // the next call reconnects instead of waiting for a dead proxy to time out.
  impl->watcher = impl->sys->spawn([lost = impl->lost](caf::event_based_actor* self) {
    auto current = std::make_shared<caf::actor_addr>();
    self->set_down_handler([=](caf::down_msg& dm) {
      if (dm.source == *current)
        lost->store(true);
    });
    return caf::behavior{[=](caf::actor fe) {
      *current = fe.address();
      self->monitor(fe);
    }};
  });
  auto fe = impl->reconnect(caf::actor{});
  if (!fe)
    return fe.error();
  return connection{impl};
}

void stop_and_wait(caf::actor_system& sys, const caf::actor& a,
                   caf::message stop) {
  if (!a)
    return;
  caf::scoped_actor self{sys};
  self->monitor(a);
  if (stop.empty())
    self->send_exit(a, caf::exit_reason::user_shutdown);
  else
    self->send(a, std::move(stop));
  self->receive([](const caf::down_msg&) {},
                caf::after(std::chrono::seconds(10)) >> [] {});
}

void retry_after_pause(caf::actor self) {
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  caf::anon_send(self, wire::tick_atom::value);
}

caf::actor start_ticker(caf::actor_system& sys, const caf::actor& target,
                        std::chrono::milliseconds period, caf::message msg) {
  caf::weak_actor_ptr weak = caf::actor_cast<caf::weak_actor_ptr>(target);
  return sys.spawn([weak, period, msg](caf::event_based_actor* self) {
    self->delayed_send(self, period, wire::tick_atom::value);
    return caf::behavior{[=](wire::tick_atom) {
      auto strong = weak.lock();
      if (!strong) {
        self->quit();
        return;
      }
      self->send(caf::actor_cast<caf::actor>(strong), msg);
      self->delayed_send(self, period, wire::tick_atom::value);
    }};
  });
}

std::string make_client_id(const char* tag) {
  static std::atomic<uint32_t> n{0};
  char host[64] = "host";
  ::gethostname(host, sizeof(host) - 1);
  return std::string(host) + "-" + std::to_string(::getpid()) + "-" + tag
         + std::to_string(n++);
}

connection make_local_connection(caf::actor_system& sys, caf::actor frontend) {
  auto impl = std::make_shared<connection_impl>();
  impl->sys = &sys;
  impl->set_frontend(std::move(frontend));
  impl->endpoint = "embedded";
  return connection{impl};
}

bool parse_endpoint(const std::string& text, std::string& host,
                    uint16_t& port, uint16_t default_port) {
  auto colon = text.rfind(':');
  host = colon == std::string::npos ? text : text.substr(0, colon);
  if (host.empty())
    host = "127.0.0.1";
  if (colon == std::string::npos) {
    port = default_port;
    return true;
  }
  auto p = text.substr(colon + 1);
  if (p.empty() || p.size() > 5
      || p.find_first_not_of("0123456789") != std::string::npos)
    return false;
  auto v = std::stoul(p);
  if (v > 65535)
    return false;
  port = static_cast<uint16_t>(v);
  return true;
}

} // namespace edda::client
