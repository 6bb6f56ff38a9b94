#include "node/services.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "broker/actors.hpp"
#include "node/gateway.hpp"
#include "txn/coordinator.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/type_erased_tuple.hpp>

#include <chrono>
#include <string>

namespace edda::node::services {

namespace {

namespace pb = wire::pb;

constexpr auto replay_timeout = std::chrono::seconds(30);

/// Keys of remembered registrations: fields joined by NUL, each ended by
/// one, so that a prefix of whole fields never matches a longer field.
std::string key_of(std::initializer_list<const std::string*> fields) {
  std::string out;
  for (auto* f : fields) {
    out += *f;
    out += '\0';
  }
  return out;
}

} // namespace

service scheduler(broker::context_ptr ctx, wiring_ptr w) {
  service s;
  s.name = "scheduler";
  s.spawn = [ctx](caf::actor_system& sys) {
    return broker::spawn_scheduler(sys, ctx);
  };
  s.restarted = [w](const caf::actor& scheduler) {
    caf::anon_send(scheduler, w->topics);
  };
  return s;
}

service topics(broker::context_ptr ctx, wiring_ptr w) {
  service s;
  s.name = "topics";
  s.spawn = [ctx](caf::actor_system& sys) {
    return broker::spawn_topic_manager(sys, ctx);
  };
  s.restarted = [w](const caf::actor& topics) {
    caf::anon_send(topics, w->groups);
    if (w->txn)
      caf::anon_send(topics, wire::txn_atom::value, w->txn);
  };
  return s;
}

service groups(broker::context_ptr ctx, caf::actor topics) {
  service s;
  s.name = "groups";
  s.spawn = [ctx, topics](caf::actor_system& sys) {
    return broker::spawn_group_manager(sys, ctx, topics);
  };
  s.remember = [](const caf::type_erased_tuple& x) -> memo {
    if (x.size() != 1)
      return {};
    if (x.match_element<pb::Subscribe>(0)) {
      auto& sub = x.get_as<pb::Subscribe>(0);
      return {memo::keep,
              key_of({&sub.group(), &sub.client_id(), &sub.topic()})};
    }
    if (x.match_element<pb::Unsubscribe>(0)) {
      auto& u = x.get_as<pb::Unsubscribe>(0);
      return {memo::forget, key_of({&u.group(), &u.client_id()})};
    }
    return {};
  };
  s.replay = [](caf::event_based_actor* keeper, const caf::actor& groups,
                const caf::message& msg, const caf::actor& member) {
    auto sub = msg.get_as<pb::Subscribe>(0);
    keeper->request(groups, replay_timeout, sub, member)
      .then([](const pb::Subscribed&) {},
            [sub](caf::error& err) {
              EDDA_WARN("node", "subscription of "
                                  << sub.client_id() << " to " << sub.group()
                                  << "/" << sub.topic()
                                  << " not given again after the restart: "
                                  << render(err));
            });
  };
  return s;
}

service dedup(broker::context_ptr ctx) {
  service s;
  s.name = "dedup";
  s.spawn = [ctx](caf::actor_system& sys) {
    return broker::spawn_dedup(sys, ctx);
  };
  return s;
}

service txn(broker::context_ptr ctx, caf::actor topics) {
  service s;
  s.name = "txn";
  s.spawn = [ctx, topics](caf::actor_system& sys) {
    return txn::spawn_coordinator(sys, ctx, topics);
  };
  s.remember = [](const caf::type_erased_tuple& x) -> memo {
    if (x.size() != 1)
      return {};
    if (x.match_element<pb::RegisterProducer>(0)) {
      auto& r = x.get_as<pb::RegisterProducer>(0);
      return {memo::keep, key_of({&r.group(), &r.client_id()})};
    }
    if (x.match_element<pb::UnregisterProducer>(0)) {
      auto& u = x.get_as<pb::UnregisterProducer>(0);
      return {memo::forget, key_of({&u.group(), &u.client_id()})};
    }
    return {};
  };
  s.replay = [](caf::event_based_actor* keeper, const caf::actor& txn,
                const caf::message& msg, const caf::actor& producer) {
    auto reg = msg.get_as<pb::RegisterProducer>(0);
    keeper->request(txn, replay_timeout, reg, producer)
      .then([](const pb::ProducerRegistered&) {},
            [reg](caf::error& err) {
              EDDA_WARN("node", "producer "
                                  << reg.client_id() << " of " << reg.group()
                                  << " not registered again after the "
                                     "restart: "
                                  << render(err));
            });
  };
  return s;
}

service gateway(broker::context_ptr ctx, caf::actor topics, caf::actor groups,
                caf::actor dedup, caf::actor txn,
                std::vector<caf::actor> saga_shards,
                caf::actor saga_directory, caf::actor cluster) {
  service s;
  s.name = "gateway";
  s.spawn = [=](caf::actor_system& sys) {
    return spawn_gateway(sys, ctx, topics, groups, dedup, txn, saga_shards,
                         saga_directory, cluster);
  };
  return s;
}

} // namespace edda::node::services
