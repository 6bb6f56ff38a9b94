// topic_manager: owns topic metadata (db `topics`, `meta`) and supervises
// the partition actors: a partition that dies is respawned from storage and
// the group manager is told so that cursors are reassigned.
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "broker/actors.hpp"
#include "broker/partition_actor.hpp"
#include "storage/environment.hpp"
#include "storage/keys.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <chrono>
#include <functional>
#include <map>

namespace edda::broker {

namespace {

namespace pb = wire::pb;
using storage::db;
namespace keys = storage::keys;

struct topic_entry {
  pb::TopicMeta meta;
  std::vector<caf::actor> partitions;
  bool pending = false; // create or alter being written
  uint32_t round_robin = 0;
  std::vector<caf::response_promise> waiters; // route requests during create
};

struct topic_manager_state {
  context_ptr ctx;
  caf::actor groups; // told about route changes
  std::map<std::string, topic_entry> topics;
  uint32_t next_topic_id = 1;
  pb::NodeMeta node;
  static inline const char* name = "edda.topic_manager";
};

using self_ptr = caf::stateful_actor<topic_manager_state>*;

caf::error check_name(const std::string& name, bool internal) {
  if (name.empty() || name.size() > 127)
    return make_error(errc::invalid_argument,
                      "topic name must be 1-127 characters, got "
                        + std::to_string(name.size()));
  for (char c : name) {
    bool ok = is_name_char(c) || (internal && c == '%');
    if (!ok)
      return make_error(errc::invalid_argument,
                        "topic name '" + name
                          + "' may only contain letters, digits, '_', '-' "
                            "and '.'");
  }
  return caf::none;
}

pb::TopicInfo info_of(const topic_entry& t) {
  pb::TopicInfo info;
  *info.mutable_meta() = t.meta;
  return info;
}

void spawn_partitions(self_ptr self, topic_entry& t) {
  auto& sys = self->home_system();
  for (auto p = static_cast<uint32_t>(t.partitions.size());
       p < t.meta.partitions(); ++p) {
    auto a = spawn_partition(sys, self->state.ctx, t.meta, p);
    self->link_to(a); // partitions stop with the manager
    t.partitions.push_back(a);
  }
}

void notify_route(self_ptr self, const std::string& topic) {
  if (self->state.groups)
    self->send(self->state.groups, wire::route_atom::value, topic);
}

/// Persists `meta` (and the node record), then calls done(err).
template <class F>
void persist(self_ptr self, const pb::TopicMeta& meta, F done) {
  auto& st = self->state;
  pb::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::topics));
  op->set_key(meta.name());
  op->set_value(meta.SerializeAsString());
  st.node.set_next_topic_id(st.next_topic_id);
  op = b.add_ops();
  op->set_db(static_cast<uint32_t>(db::meta));
  op->set_key("node");
  op->set_value(st.node.SerializeAsString());
  self
    ->request(st.ctx->writer, std::chrono::milliseconds(st.ctx->write_timeout_ms),
              std::move(b))
    .then([=](const pb::WriteResult&) mutable { done(caf::error{}); },
          [=](caf::error& err) mutable { done(err); });
}

/// Creates a topic; `done(err)` runs once it is durable (or failed).
/// Synchronous validation errors are returned and `done` is not called.
caf::error create(self_ptr self, const std::string& name, uint32_t partitions,
                  pb::TopicKind kind,
                  std::function<void(const caf::error&)> done) {
  auto& st = self->state;
  if (auto err = check_name(name, kind == pb::TOPIC_RETRY))
    return err;
  if (name[0] == '%' && kind != pb::TOPIC_RETRY)
    return make_error(errc::invalid_argument, "names starting with '%' are "
                                              "reserved");
  if (partitions == 0)
    partitions = st.ctx->settings.default_partitions;
  if (partitions > 1024)
    return make_error(errc::invalid_argument,
                      "at most 1024 partitions, got "
                        + std::to_string(partitions));
  if (st.topics.count(name) != 0)
    return make_error(errc::topic_exists, "topic '" + name + "' exists");
  auto& t = st.topics[name];
  t.pending = true;
  t.meta.set_name(name);
  t.meta.set_id(st.next_topic_id++);
  t.meta.set_partitions(partitions);
  t.meta.set_created_ms(st.ctx->clock());
  t.meta.set_kind(kind);
  persist(self, t.meta, [=](const caf::error& err) {
    auto& st = self->state;
    auto i = st.topics.find(name);
    if (err) {
      auto waiters = std::move(i->second.waiters);
      st.topics.erase(i);
      for (auto& w : waiters)
        w.deliver(err);
      done(err);
      return;
    }
    auto& t = i->second;
    t.pending = false;
    spawn_partitions(self, t);
    EDDA_INFO("topics", "created " << name << " with " << partitions
                                   << " partitions");
    auto waiters = std::move(t.waiters);
    for (auto& w : waiters)
      w.deliver(t.meta, t.partitions);
    done(caf::error{});
  });
  return caf::none;
}

/// Looks up a topic that is ready for traffic.
caf::expected<topic_entry*> find(self_ptr self, const std::string& name) {
  auto i = self->state.topics.find(name);
  if (i == self->state.topics.end() || (i->second.pending
                                        && i->second.partitions.empty()))
    return make_error(errc::unknown_topic, "no topic named '" + name + "'");
  return &i->second;
}

int32_t pick_partition(topic_entry& t, const std::string& key) {
  auto n = static_cast<uint32_t>(t.partitions.size());
  if (!key.empty())
    return static_cast<int32_t>(shard_of(key, n));
  return static_cast<int32_t>(t.round_robin++ % n);
}

caf::behavior topic_manager(self_ptr self, context_ptr ctx) {
  auto& st = self->state;
  st.ctx = ctx;
  {
    auto txn = ctx->env->read();
    if (auto v = txn.get(db::meta, "node"))
      st.node.ParseFromArray(v->data(), static_cast<int>(v->size()));
    if (st.node.node_id().empty()) {
      st.node.set_node_id(new_unique_id());
      st.node.set_format_version(1);
      st.node.set_created_ms(ctx->clock());
    }
    st.next_topic_id = std::max<uint32_t>(1, st.node.next_topic_id());
    txn.scan(db::topics, "", "", [&](std::string_view k, std::string_view v) {
      pb::TopicMeta meta;
      if (!meta.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
        EDDA_ERROR("topics", "unparsable topic record '" << k << "'");
        return true;
      }
      auto& t = st.topics[meta.name()];
      t.meta = meta;
      st.next_topic_id = std::max(st.next_topic_id, meta.id() + 1);
      return true;
    });
  }
  for (auto& [name, t] : st.topics)
    spawn_partitions(self, t);
  // Partitions are linked: a partition that dies is respawned from storage
  // (its cursors come back when the group manager reassigns them); an exit
  // from anyone else (the node stopping) stops the manager and, through the
  // links, every partition.
  self->set_exit_handler([=](caf::exit_msg& em) {
    for (auto& [name, t] : self->state.topics) {
      for (size_t p = 0; p < t.partitions.size(); ++p) {
        if (t.partitions[p].address() != em.source)
          continue;
        if (em.reason == caf::exit_reason::user_shutdown
            || em.reason == caf::exit_reason::normal)
          return;
        EDDA_WARN("topics", "partition " << name << "/" << p
                                         << " died (" << render(em.reason)
                                         << "), restarting from storage");
        t.partitions[p] = spawn_partition(self->home_system(),
                                          self->state.ctx, t.meta,
                                          static_cast<uint32_t>(p));
        self->link_to(t.partitions[p]);
        notify_route(self, name);
        return;
      }
    }
    self->quit(em.reason);
  });
  return {
    [=](caf::actor groups) { self->state.groups = groups; },
    [=](const pb::CreateTopic& req) -> caf::result<pb::TopicInfo> {
      auto rp = self->make_response_promise<pb::TopicInfo>();
      auto name = req.name();
      auto err = create(self, name, req.partitions(), pb::TOPIC_NORMAL,
                        [=](const caf::error& err) mutable {
                          if (err)
                            rp.deliver(err);
                          else
                            rp.deliver(info_of(self->state.topics[name]));
                        });
      // Once a promise exists, CAF drops a returned error: deliver it.
      if (err)
        rp.deliver(err);
      return rp;
    },
    [=](const pb::GetTopic& req) -> caf::result<pb::TopicMeta> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      return (*t)->meta;
    },
    [=](const pb::ListTopics& req) {
      pb::TopicList out;
      for (auto& [name, t] : self->state.topics)
        if (!t.pending && (req.include_internal() || name[0] != '%'))
          *out.add_topics() = info_of(t);
      return out;
    },
    [=](const pb::DescribeTopic& req) -> caf::result<pb::TopicInfo> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      auto rp = self->make_response_promise<pb::TopicInfo>();
      auto acc = std::make_shared<pb::TopicInfo>(info_of(**t));
      auto remaining = std::make_shared<size_t>((*t)->partitions.size());
      for (auto& p : (*t)->partitions)
        self->request(p, std::chrono::seconds(10), req)
          .then(
            [=](pb::TopicInfo& part) mutable {
              acc->MergeFrom(part);
              if (--*remaining == 0)
                rp.deliver(*acc);
            },
            [=](caf::error& err) mutable {
              if (--*remaining == 0)
                rp.deliver(*acc);
            });
      return rp;
    },
    [=](const pb::AlterTopic& req) -> caf::result<pb::TopicInfo> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      auto& e = **t;
      if (e.pending)
        return make_error(errc::invalid_argument,
                          "topic '" + req.name() + "' is being changed");
      if (req.partitions() <= e.meta.partitions() || req.partitions() > 1024)
        return make_error(errc::invalid_argument,
                          "partitions can only grow (now "
                            + std::to_string(e.meta.partitions())
                            + ", at most 1024), got "
                            + std::to_string(req.partitions()));
      auto meta = e.meta;
      meta.set_partitions(req.partitions());
      e.pending = true;
      auto rp = self->make_response_promise<pb::TopicInfo>();
      auto name = req.name();
      persist(self, meta, [=](const caf::error& err) mutable {
        auto& t = self->state.topics[name];
        t.pending = false;
        if (err) {
          rp.deliver(err);
          return;
        }
        t.meta = meta;
        spawn_partitions(self, t);
        EDDA_INFO("topics", "topic " << name << " now has "
                                     << meta.partitions() << " partitions");
        notify_route(self, name);
        rp.deliver(info_of(t));
      });
      return rp;
    },
    [=](const pb::DeleteTopic& req) -> caf::result<pb::Done> {
      auto t = find(self, req.name());
      if (!t)
        return t.error();
      if (req.name()[0] == '%')
        return make_error(errc::invalid_argument,
                          "internal topics go away with their group");
      auto& e = **t;
      if (e.pending)
        return make_error(errc::invalid_argument,
                          "topic '" + req.name() + "' is being changed");
      pb::WriteBatch b;
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::topics));
      op->set_key(req.name());
      op->set_kind(pb::WriteOp::DEL);
      op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::log));
      op->set_key(keys::topic_log_prefix(e.meta.id()));
      op->set_kind(pb::WriteOp::DEL_PREFIX);
      e.pending = true;
      auto rp = self->make_response_promise<pb::Done>();
      auto name = req.name();
      auto ctx = self->state.ctx;
      self
        ->request(ctx->writer, std::chrono::milliseconds(ctx->write_timeout_ms),
                  std::move(b))
        .then(
          [=](const pb::WriteResult&) mutable {
            auto& topics = self->state.topics;
            auto i = topics.find(name);
            if (i != topics.end()) {
              for (auto& p : i->second.partitions)
                self->send_exit(p, caf::exit_reason::user_shutdown);
              topics.erase(i);
            }
            notify_route(self, name);
            EDDA_INFO("topics", "deleted " << name);
            pb::Done d;
            d.set_what("deleted topic " + name);
            rp.deliver(d);
          },
          [=](caf::error& err) mutable {
            auto i = self->state.topics.find(name);
            if (i != self->state.topics.end())
              i->second.pending = false;
            rp.deliver(err);
          });
      return rp;
    },
    [=](pb::ProduceRequest& req) -> caf::result<pb::ProduceResult> {
      auto t = find(self, req.topic());
      if (!t)
        return t.error();
      auto& e = **t;
      auto p = req.partition();
      if (p < 0)
        p = pick_partition(e, req.messages_size() > 0 ? req.messages(0).key()
                                                      : std::string{});
      if (static_cast<size_t>(p) >= e.partitions.size())
        return make_error(errc::invalid_argument,
                          "topic '" + req.topic() + "' has no partition "
                            + std::to_string(p));
      req.set_partition(p);
      req.set_topic_partitions(static_cast<uint32_t>(e.partitions.size()));
      self->delegate(e.partitions[static_cast<size_t>(p)],
                            std::move(req));
      return caf::delegated<pb::ProduceResult>{};
    },
    [=](pb::AppendInternal& req) -> caf::result<pb::ProduceResult> {
      auto t = find(self, req.topic());
      if (!t)
        return t.error();
      auto& e = **t;
      auto p = req.partition();
      if (p < 0 || static_cast<size_t>(p) >= e.partitions.size())
        p = pick_partition(e, req.messages_size() > 0 ? req.messages(0).key()
                                                      : std::string{});
      req.set_partition(p);
      self->delegate(e.partitions[static_cast<size_t>(p)],
                            std::move(req));
      return caf::delegated<pb::ProduceResult>{};
    },
    [=](wire::route_atom, const std::string& topic, bool create_retry) {
      // Replies (TopicMeta, partitions) once the topic is ready.
      auto rp = self->make_response_promise();
      auto& topics = self->state.topics;
      auto i = topics.find(topic);
      if (i != topics.end()) {
        if (i->second.pending && i->second.partitions.empty())
          i->second.waiters.push_back(rp);
        else
          rp.deliver(i->second.meta, i->second.partitions);
        return rp;
      }
      if (!create_retry || !is_retry_topic(topic)) {
        rp.deliver(make_error(errc::unknown_topic,
                              "no topic named '" + topic + "'"));
        return rp;
      }
      auto err = create(self, topic, 1, pb::TOPIC_RETRY,
                        [](const caf::error&) {});
      if (err)
        rp.deliver(err);
      else
        self->state.topics[topic].waiters.push_back(rp);
      return rp;
    },
  };
}

} // namespace

caf::actor spawn_topic_manager(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(topic_manager, std::move(ctx));
}

void wire_up(caf::actor scheduler, caf::actor topics, caf::actor groups) {
  caf::anon_send(topics, groups);
  caf::anon_send(scheduler, topics);
}

} // namespace edda::broker
