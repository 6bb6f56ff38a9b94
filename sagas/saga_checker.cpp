#include "sagas/saga_checker.hpp"

#include "sagas/runtime_shared.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <map>

namespace edda::sagas {

namespace pb = wire::pb;
using storage::db;

check_outcome outcome_from_record(const pb::SagaRecord* rec,
                                  const std::string& step, uint32_t attempt,
                                  const std::string& txn_id,
                                  bool earlier_run) {
  if (rec == nullptr) // the saga's first write never happened, or not yet
    return earlier_run ? check_outcome::rollback : check_outcome::unknown;
  for (auto& s : rec->steps()) {
    if (s.name() != step)
      continue;
    if (!txn_id.empty() && s.txn_id() == txn_id)
      return check_outcome::commit;
    if (s.attempts() >= attempt)
      return check_outcome::rollback; // the attempt went without it
    if (is_terminal(state_of(*rec)) || earlier_run)
      return check_outcome::rollback; // it never will be recorded
    return check_outcome::unknown;
  }
  return check_outcome::rollback; // no such step: never recorded
}

namespace {

constexpr auto register_every = std::chrono::seconds(2);
constexpr auto register_timeout = std::chrono::seconds(5);

struct checker_state {
  broker::context_ptr ctx;
  caf::actor txn;
  std::string boot; // this run's id
  std::map<std::string, caf::actor> peers; // node id -> its gateway
  bool stopping = false;
  static inline const char* name = "edda.saga_checker";
};

using checker_ptr = caf::stateful_actor<checker_state>*;

/// Registers with this node's txn coordinator (`node` empty) or, through
/// its gateway, another node's: a node's own group, which clients may not
/// join (the gateway refuses them).
void register_with(checker_ptr self, const caf::actor& where,
                   const std::string& node) {
  if (!where)
    return;
  pb::RegisterProducer r;
  r.set_group(saga_producer_group(self->state.ctx->node_id));
  r.set_client_id(self->state.ctx->node_id);
  auto req = node.empty()
               ? self->request(where, register_timeout, std::move(r))
               : self->request(where, register_timeout,
                               wire::txn_atom::value, std::move(r));
  req.then([](const pb::ProducerRegistered&) {},
          [node](caf::error& err) {
            EDDA_DEBUG("saga", "saga checker not registered on "
                                 << node << ": " << render(err)
                                 << " (again in 2 s)");
          });
}

void register_everywhere(checker_ptr self) {
  register_with(self, self->state.txn, "");
  for (auto& [id, gw] : self->state.peers)
    register_with(self, gw, id);
}

pb::CheckAnswer answer(checker_ptr self, const pb::CheckTxn& q) {
  pb::CheckAnswer a;
  a.set_txn_id(q.txn_id());
  a.set_outcome(pb::TXN_UNKNOWN);
  auto& props = q.message().properties();
  auto id = props.find("saga_id");
  auto step = props.find("saga_step");
  auto attempt = props.find("saga_attempt");
  uint32_t n = 0;
  if (id == props.end() || step == props.end() || attempt == props.end()
      || attempt->second.empty()
      || attempt->second.find_first_not_of("0123456789") != std::string::npos
      || attempt->second.size() > 9) {
    EDDA_WARN("saga", "check-back of " << q.txn_id()
                                       << " names no saga step: unknown");
    return a;
  }
  n = static_cast<uint32_t>(std::stoul(attempt->second));
  pb::SagaRecord rec;
  bool found = false;
  {
    auto r = self->state.ctx->env->read();
    if (auto v = r.get(db::saga, id->second))
      found = rec.ParseFromArray(v->data(), static_cast<int>(v->size()));
  }
  auto boot = props.find("saga_boot");
  bool earlier_run = boot != props.end() && boot->second != self->state.boot;
  auto o = outcome_from_record(found ? &rec : nullptr, step->second, n,
                               q.txn_id(), earlier_run);
  switch (o) {
    case check_outcome::commit:
      a.set_outcome(pb::TXN_COMMIT);
      metrics::counter("sagas.checks_commit")++;
      break;
    case check_outcome::rollback:
      a.set_outcome(pb::TXN_ROLLBACK);
      metrics::counter("sagas.checks_rollback")++;
      break;
    case check_outcome::unknown:
      metrics::counter("sagas.checks_unknown")++;
      break;
  }
  EDDA_INFO("saga", id->second << ": check-back of " << q.txn_id() << " ("
                               << step->second << ", attempt " << n
                               << "): "
                               << (o == check_outcome::commit
                                     ? "commit"
                                     : o == check_outcome::rollback
                                         ? "rollback"
                                         : "unknown"));
  return a;
}

caf::behavior checker(checker_ptr self, broker::context_ptr ctx,
                      caf::actor txn, std::string boot) {
  self->state.ctx = std::move(ctx);
  self->state.txn = std::move(txn);
  self->state.boot = std::move(boot);
  if (self->state.ctx->cluster)
    self->send(self->state.ctx->cluster, wire::watch_atom::value,
               caf::actor_cast<caf::actor>(self));
  register_everywhere(self);
  self->delayed_send(self, register_every, wire::tick_atom::value);
  return {
    [=](const pb::CheckTxn& q) { return answer(self, q); },
    [=](const pb::MembershipView&) {},
    [=](wire::link_atom, const std::string& id, caf::actor& gw) {
      auto& peers = self->state.peers;
      if (gw) {
        peers[id] = gw;
        register_with(self, gw, id);
      } else {
        peers.erase(id);
      }
    },
    [=](wire::tick_atom) {
      if (self->state.stopping)
        return;
      register_everywhere(self);
      self->delayed_send(self, register_every, wire::tick_atom::value);
    },
    [=](wire::stop_atom) {
      self->state.stopping = true;
      self->quit();
    },
  };
}

} // namespace

caf::actor spawn_saga_checker(caf::actor_system& sys, broker::context_ptr ctx,
                              caf::actor txn, std::string boot) {
  return sys.spawn(checker, std::move(ctx), std::move(txn), std::move(boot));
}

} // namespace edda::sagas
