// supervisor: the keepers of a node's services and the watch on its
// storage writer (see supervisor.hpp for what each promises).
#include "node/supervisor.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/message_view.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <caf/type_erased_tuple.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace edda::node {

namespace {

using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

int64_t ms_of(steady::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

// -- keeper -------------------------------------------------------------------

struct kept_message {
  caf::message msg;
  caf::actor sender;
};

struct keeper_state {
  service svc;
  restart_policy policy;
  caf::actor current;      // null while the service restarts
  uint64_t generation = 0; // incarnations started so far
  bool stopping = false;   // the node stops: no more restarts
  caf::error stop_reason;
  milliseconds pause{0}; // the last pause before a restart (0: none yet)
  steady::time_point started;
  std::map<std::string, kept_message> kept; // registrations, by key
  std::set<caf::actor_addr> watched;        // their senders (monitored)
  static inline const char* name = "edda.keeper";
};

using keeper_ptr = caf::stateful_actor<keeper_state>*;

bool on_purpose(const caf::error& reason) {
  return !reason || reason == caf::exit_reason::normal
         || reason == caf::exit_reason::user_shutdown;
}

/// Spawns the next incarnation and monitors it. Not a link: an exit_msg
/// with reason kill is fatal even to an actor that traps exits, so a killed
/// incarnation would take its keeper with it; and an actor that gets an
/// exit_msg from its keeper unlinks from it before it ends.
void start(keeper_ptr self) {
  auto& st = self->state;
  st.current = st.svc.spawn(self->home_system());
  ++st.generation;
  st.started = steady::now();
  if (st.current)
    self->monitor(st.current);
}

void schedule_restart(keeper_ptr self, const caf::error& reason) {
  auto& st = self->state;
  auto up = steady::now() - st.started;
  if (st.pause.count() == 0 || up >= st.policy.stable)
    st.pause = st.policy.first;
  else
    st.pause = std::min(st.pause * 2, st.policy.max);
  EDDA_WARN("node", st.svc.name << " died after " << ms_of(up) << " ms ("
                                << render(reason) << "); starting it again in "
                                << st.pause.count() << " ms");
  self->delayed_send(self, st.pause, wire::restart_atom::value, st.generation);
}

/// The current incarnation ended with `reason`.
void ended(keeper_ptr self, const caf::error& reason) {
  auto& st = self->state;
  st.current = nullptr;
  if (st.stopping) {
    self->quit(st.stop_reason);
    return;
  }
  if (on_purpose(reason)) {
    EDDA_WARN("node", st.svc.name << " stopped on purpose (" << render(reason)
                                  << "); not restarted");
    self->quit(reason);
    return;
  }
  schedule_restart(self, reason);
}

void restart(keeper_ptr self, uint64_t generation) {
  auto& st = self->state;
  if (st.stopping || st.current || generation != st.generation)
    return;
  start(self);
  auto n = ++metrics::counter("node.restarts." + st.svc.name);
  EDDA_INFO("node", st.svc.name << " started again from storage (restart " << n
                                << " since the process started)");
  if (!st.current)
    return;
  if (st.svc.restarted)
    st.svc.restarted(st.current);
  if (st.svc.replay)
    for (auto& [key, k] : st.kept)
      st.svc.replay(self, st.current, k.msg, k.sender);
}

/// Remembers or forgets a registration passing through (service::remember).
void remember(keeper_ptr self, caf::message_view& xs) {
  auto& st = self->state;
  auto m = st.svc.remember(xs.content());
  if (m.what == memo::keep) {
    auto sender = caf::actor_cast<caf::actor>(self->current_sender());
    if (!sender)
      return;
    if (st.watched.insert(sender.address()).second)
      self->monitor(sender);
    st.kept[m.key] = kept_message{xs.copy_content_to_message(), sender};
  } else if (m.what == memo::forget) {
    for (auto i = st.kept.lower_bound(m.key);
         i != st.kept.end() && i->first.compare(0, m.key.size(), m.key) == 0;)
      i = st.kept.erase(i);
  }
}

/// The default handler: every message the keeper does not handle itself
/// goes to the current incarnation, sender and request id unchanged.
caf::result<caf::message> pass_on(keeper_ptr self, caf::message_view& xs) {
  auto& st = self->state;
  auto sender = self->current_sender();
  bool request = self->current_message_id().is_request();
  // Nothing an incarnation sends its own keeper goes back to it; and a
  // message that is no request gets no answer (an error sent to an actor
  // that did not ask would make it quit).
  if (st.current
      && sender == caf::actor_cast<caf::strong_actor_ptr>(st.current))
    return caf::delegated<caf::message>{};
  if (!st.current) {
    if (!request)
      return caf::delegated<caf::message>{};
    return make_error(errc::unavailable,
                      st.svc.name + " is restarting; try again");
  }
  if (st.svc.remember)
    remember(self, xs);
  self->delegate(st.current, xs.move_content_to_message());
  return caf::delegated<caf::message>{};
}

caf::behavior keeper(keeper_ptr self, service svc, restart_policy policy) {
  auto& st = self->state;
  st.svc = std::move(svc);
  st.policy = policy;
  start(self);
  self->set_exit_handler([self](caf::exit_msg& em) {
    // The node stops (or failed). A normal exit asks nothing of an actor
    // that does not trap exits; the same here.
    auto& st = self->state;
    if (st.stopping || !em.reason || em.reason == caf::exit_reason::normal)
      return;
    st.stopping = true;
    st.stop_reason = em.reason;
    if (!st.current) {
      self->quit(em.reason);
      return;
    }
    self->send_exit(st.current, em.reason); // its down comes: ended()
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.current && dm.source == st.current.address()) {
      ended(self, dm.reason);
      return;
    }
    // A registrant went away: forget what it registered.
    st.watched.erase(dm.source);
    for (auto i = st.kept.begin(); i != st.kept.end();)
      if (i->second.sender.address() == dm.source)
        i = st.kept.erase(i);
      else
        ++i;
  });
  self->set_error_handler([self](caf::error& err) {
    EDDA_DEBUG("node", self->state.svc.name << " keeper: ignored error message "
                                            << render(err));
  });
  self->set_default_handler(
    [self](caf::scheduled_actor*, caf::message_view& xs) {
      return pass_on(self, xs);
    });
  if (!st.current)
    schedule_restart(self, make_error(errc::unavailable, "spawn failed"));
  return {
    [self](wire::current_atom) -> caf::result<caf::actor> {
      auto& st = self->state;
      if (!st.current)
        return make_error(errc::unavailable,
                          st.svc.name + " is restarting; try again");
      return st.current;
    },
    [self](wire::restart_atom, uint64_t generation) {
      restart(self, generation);
    },
  };
}

// -- writer watch -------------------------------------------------------------

struct watch_state {
  std::function<void(const caf::error&)> fatal;
  static inline const char* name = "edda.writer_watch";
};

caf::behavior writer_watch(caf::stateful_actor<watch_state>* self,
                           caf::actor writer,
                           std::function<void(const caf::error&)> fatal) {
  self->state.fatal = std::move(fatal);
  self->monitor(writer); // no handle kept: the writer is detached
  self->set_down_handler([self](caf::down_msg& dm) {
    auto f = std::move(self->state.fatal);
    self->quit();
    if (f)
      f(dm.reason
          ? dm.reason
          : make_error(errc::storage_error, "the storage writer stopped"));
  });
  return {
    [self](wire::stop_atom) { self->quit(); },
  };
}

} // namespace

caf::actor spawn_keeper(caf::actor_system& sys, service s,
                        restart_policy policy) {
  return sys.spawn(keeper, std::move(s), policy);
}

// -- supervisor ---------------------------------------------------------------

supervisor::supervisor(caf::actor_system& sys, restart_policy policy)
    : sys_(sys), policy_(policy) {}

supervisor::~supervisor() = default;

caf::actor supervisor::keep(service s) {
  auto name = s.name;
  auto k = spawn_keeper(sys_, std::move(s), policy_);
  std::lock_guard<std::mutex> guard{mtx_};
  keepers_.emplace_back(std::move(name), k);
  return k;
}

void supervisor::watch_writer(const caf::actor& writer,
                              std::function<void(const caf::error&)> on_fatal) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    on_fatal_ = std::move(on_fatal);
  }
  auto w = sys_.spawn(writer_watch, writer,
                      [this](const caf::error& reason) { fatal(reason); });
  std::lock_guard<std::mutex> guard{mtx_};
  watch_ = std::move(w);
}

void supervisor::fatal(const caf::error& reason) {
  if (stopping_.load())
    return;
  std::vector<std::pair<std::string, caf::actor>> keepers;
  std::function<void(const caf::error&)> on_fatal;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (failure_)
      return;
    failure_ = make_error(errc::storage_error, "the storage writer died ("
                                                 + render(reason)
                                                 + "); the node stopped");
    keepers = keepers_;
    on_fatal = std::move(on_fatal_);
  }
  metrics::counter("node.fatal")++;
  EDDA_ERROR("node", "the storage writer died ("
                       << render(reason)
                       << "): it is the only LMDB writer and is not "
                          "restarted; stopping every service. Nothing "
                          "acknowledged is lost (LMDB is crash-safe): start "
                          "the node again");
  // Stops each keeper with the writer's error as the reason (what a client
  // monitoring the gateway sees).
  // Not exit_reason::kill itself (the writer's reason in tests): a keeper
  // could not trap it and would leave its service running.
  auto why = make_error(errc::storage_error,
                        "the storage writer died: " + render(reason));
  for (auto i = keepers.rbegin(); i != keepers.rend(); ++i)
    caf::anon_send(i->second, caf::exit_msg{caf::actor_addr{}, why});
  if (on_fatal)
    on_fatal(reason);
}

caf::actor supervisor::keeper(const std::string& name) const {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& [n, k] : keepers_)
    if (n == name)
      return k;
  return {};
}

caf::actor supervisor::incarnation(const std::string& name) const {
  auto k = keeper(name);
  if (!k)
    return {};
  caf::actor out;
  caf::scoped_actor self{sys_};
  self->request(k, std::chrono::seconds(5), wire::current_atom::value)
    .receive([&](caf::actor& a) { out = std::move(a); }, [](caf::error&) {});
  return out;
}

caf::error supervisor::failure() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return failure_;
}

void supervisor::stop(std::chrono::milliseconds timeout) {
  stopping_ = true;
  std::vector<std::pair<std::string, caf::actor>> keepers;
  caf::actor watch;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    keepers.swap(keepers_);
    watch = std::move(watch_);
    on_fatal_ = nullptr;
  }
  if (watch)
    caf::anon_send(watch, wire::stop_atom::value);
  if (keepers.empty())
    return;
  caf::scoped_actor self{sys_};
  for (auto i = keepers.rbegin(); i != keepers.rend(); ++i) {
    self->monitor(i->second);
    caf::anon_send_exit(i->second, caf::exit_reason::user_shutdown);
  }
  auto deadline = steady::now() + timeout;
  size_t left = keepers.size();
  bool late = false;
  while (left > 0 && !late) {
    auto rest = std::max<steady::duration>(deadline - steady::now(),
                                           steady::duration::zero());
    self->receive([&](const caf::down_msg&) { --left; },
                  caf::after(rest) >> [&] { late = true; });
  }
  if (late)
    EDDA_WARN("node", left << " services did not stop within "
                           << timeout.count() << " ms; going on");
}

} // namespace edda::node
