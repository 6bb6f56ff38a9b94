#include "broker/topic_table.hpp"

#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "cluster/membership.hpp"
#include "cluster/placement.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/weak_intrusive_ptr.hpp>

#include <algorithm>
#include <map>

namespace edda::broker {

namespace {

namespace pb = wire::pb;

struct table_state {
  topic_table_options opts;
  std::string prefix; ///< /edda/<cluster>/
  std::map<std::string, pb::ClusterTopic> topics; ///< as last seen
  std::unique_ptr<coord::watch> watch;
  uint64_t watch_gen = 0;
  static inline const char* name = "edda.topic_table";
};

using self_ptr = caf::stateful_actor<table_state>*;

std::string topics_prefix(const table_state& st) {
  return st.prefix + "topics/";
}

std::optional<pb::ClusterTopic> parse(const coord::key_value& kv) {
  pb::ClusterTopic t;
  if (!t.ParseFromString(kv.value) || t.name().empty())
    return std::nullopt;
  t.set_mod_revision(kv.mod_revision);
  return t;
}

/// Lists the topics, pushes a snapshot, watches from there. On failure,
/// tries again in a second.
void resync(self_ptr self) {
  auto& st = self->state;
  if (st.watch) {
    st.watch->cancel();
    st.watch.reset();
  }
  auto gen = ++st.watch_gen;
  auto retry = [=](const caf::error& err) {
    EDDA_WARN("topics", "cannot read the topic table from etcd ("
                          << render(err) << "); trying again in 1 s");
    self->delayed_send(self, std::chrono::seconds(1), wire::tick_atom::value,
                       gen);
  };
  auto r = st.opts.store->get_prefix(topics_prefix(st));
  if (!r) {
    retry(r.error());
    return;
  }
  pb::TopicUpdate snap;
  snap.set_snapshot(true);
  snap.set_revision(r->revision);
  st.topics.clear();
  for (auto& kv : r->kvs) {
    snap.add_present(kv.key.substr(topics_prefix(st).size()));
    if (auto t = parse(kv)) {
      st.topics[t->name()] = *t;
      *snap.add_topics() = *t;
    } else {
      EDDA_ERROR("topics", "the record " << kv.key
                                         << " in etcd does not parse; its "
                                            "topic is left alone");
    }
  }
  self->send(st.opts.manager, snap);
  // Weak: the watch lives in this actor's state and must not keep it alive.
  caf::weak_actor_ptr me = self->ctrl();
  coord::watch_handlers h;
  auto pfx = topics_prefix(st);
  h.on_events = [me, pfx, gen](const std::vector<coord::watch_event>& evs) {
    // One update per event, in revision order: a delete and a re-create of
    // one name in one batch must be applied in that order.
    auto strong = me.lock();
    if (!strong)
      return;
    for (auto& e : evs) {
      pb::TopicUpdate u;
      u.set_revision(e.kv.mod_revision);
      if (e.type == coord::watch_event::kind::del)
        u.add_deleted(e.kv.key.substr(pfx.size()));
      else if (auto t = parse(e.kv))
        *u.add_topics() = *t;
      else
        continue;
      caf::anon_send(caf::actor_cast<caf::actor>(strong), std::move(u), gen);
    }
  };
  h.on_error = [me, gen](const caf::error& err) {
    EDDA_WARN("topics", "the topic watch ended (" << render(err)
                                                  << "); reading again");
    if (auto strong = me.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), wire::tick_atom::value,
                     gen);
  };
  auto w = st.opts.store->watch_prefix(pfx, r->revision + 1, std::move(h));
  if (!w) {
    retry(w.error());
    return;
  }
  st.watch = std::move(*w);
}

/// Topic `name` as etcd has it now (mod_revision set). Errors:
/// unknown_topic, malformed_message, those of the store.
caf::expected<pb::ClusterTopic> read_topic(self_ptr self,
                                           const std::string& name) {
  auto& st = self->state;
  auto cur = st.opts.store->get(topics_prefix(st) + name);
  if (!cur)
    return cur.error();
  if (!cur->first)
    return make_error(errc::unknown_topic, "no topic named '" + name + "'");
  auto t = parse(*cur->first);
  if (!t)
    return make_error(errc::malformed_message,
                      "the record of topic '" + name
                        + "' in etcd does not parse");
  return *t;
}

caf::error changed_meanwhile(const std::string& name) {
  return make_error(errc::invalid_argument,
                    "topic '" + name + "' changed meanwhile; try again");
}

/// Live members and the partitions each holds now.
caf::error members_and_load(self_ptr self, std::vector<node_id>& members,
                            std::map<node_id, uint32_t>& load) {
  auto& st = self->state;
  auto r = st.opts.store->get_prefix(st.prefix + "members/");
  if (!r)
    return r.error();
  for (auto& kv : r->kvs) {
    pb::MemberInfo m;
    if (m.ParseFromString(kv.value) && !m.node_id().empty())
      members.emplace_back(m.node_id());
  }
  if (members.empty())
    return make_error(errc::unavailable,
                      "no live member to place partitions on");
  for (auto& [name, t] : st.topics)
    for (auto& h : t.homes())
      ++load[node_id{h}];
  return caf::none;
}

/// The next topic id, taken by compare-and-swap on the counter key.
caf::expected<uint32_t> next_topic_id(self_ptr self) {
  auto& store = *self->state.opts.store;
  auto key = self->state.prefix + "topic_ids";
  for (int attempt = 0; attempt < 32; ++attempt) {
    auto cur = store.get(key);
    if (!cur)
      return cur.error();
    uint64_t next = 1;
    int64_t rev = 0;
    if (cur->first) {
      next = std::strtoull(cur->first->value.c_str(), nullptr, 10);
      rev = cur->first->mod_revision;
    }
    if (next == 0 || next > 0xffffffffull)
      return make_error(errc::storage_error, "the topic id counter "
                                               "in etcd is corrupt");
    auto put = store.cas_put(key, std::to_string(next + 1), rev);
    if (!put)
      return put.error();
    if (put->succeeded)
      return static_cast<uint32_t>(next);
  }
  return make_error(errc::unavailable, "the topic id counter is contended");
}

caf::behavior topic_table(self_ptr self, topic_table_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.prefix = cluster::membership::prefix(st.opts.cluster_name);
  resync(self);
  return {
    [=](pb::TopicUpdate& u, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.watch_gen)
        return; // from a watch that was replaced
      for (auto& t : u.topics())
        st.topics[t.name()] = t;
      for (auto& d : u.deleted())
        st.topics.erase(d);
      self->send(st.opts.manager, std::move(u));
    },
    [=](wire::tick_atom, uint64_t gen) {
      if (gen == self->state.watch_gen)
        resync(self);
    },
    [=](const pb::CreateTopic& req,
        uint32_t kind) -> caf::result<pb::ClusterTopic> {
      auto& st = self->state;
      auto key = topics_prefix(st) + req.name();
      auto cur = st.opts.store->get(key);
      if (!cur)
        return cur.error();
      if (cur->first) {
        if (auto t = parse(*cur->first);
            t && kind == pb::TOPIC_RETRY && t->kind() == pb::TOPIC_RETRY)
          return *t; // a retry topic another node created first
        return make_error(errc::topic_exists,
                          "topic '" + req.name() + "' exists");
      }
      std::vector<node_id> members;
      std::map<node_id, uint32_t> load;
      if (auto err = members_and_load(self, members, load))
        return err;
      auto id = next_topic_id(self);
      if (!id)
        return id.error();
      pb::ClusterTopic t;
      t.set_name(req.name());
      t.set_id(*id);
      t.set_created_ms(now_ms());
      t.set_kind(static_cast<pb::TopicKind>(kind));
      if (kind == pb::TOPIC_RETRY) {
        // A group's retry topic: a partition on every member, so that a
        // retry copy always moves into a partition of the node that holds
        // it, in one LMDB transaction with the delete of its delay record.
        std::sort(members.begin(), members.end());
        for (auto& h : members)
          t.add_homes(h.value());
      } else {
        for (auto& h : cluster::place_partitions(
               req.name(), 0, req.partitions(), members, load))
          t.add_homes(h.value());
      }
      auto put = st.opts.store->cas_put(key, t.SerializeAsString(), 0);
      if (!put)
        return put.error();
      if (!put->succeeded) {
        if (put->current)
          if (auto other = parse(*put->current);
              other && kind == pb::TOPIC_RETRY
              && other->kind() == pb::TOPIC_RETRY)
            return *other;
        return make_error(errc::topic_exists,
                          "topic '" + req.name() + "' exists");
      }
      t.set_mod_revision(put->revision);
      st.topics[t.name()] = t;
      return t;
    },
    [=](const pb::AlterTopic& req) -> caf::result<pb::ClusterTopic> {
      auto& st = self->state;
      auto key = topics_prefix(st) + req.name();
      auto t = read_topic(self, req.name());
      if (!t)
        return t.error();
      auto expect = t->mod_revision();
      auto have = static_cast<uint32_t>(t->homes_size());
      if (req.partitions() != 0 && req.partitions() <= have)
        return make_error(errc::invalid_argument,
                          "topic '" + req.name() + "' has "
                            + std::to_string(have)
                            + " partitions: partitions can only grow, got "
                            + std::to_string(req.partitions()));
      if (req.partitions() != 0) {
        std::vector<node_id> members;
        std::map<node_id, uint32_t> load;
        if (auto err = members_and_load(self, members, load))
          return err;
        for (auto& h : cluster::place_partitions(req.name(), have,
                                                 req.partitions() - have,
                                                 members, load))
          t->add_homes(h.value());
      }
      if (req.set_retention())
        t->set_retention_ms(req.retention_ms());
      if (req.set_retention_bytes())
        t->set_retention_bytes(req.retention_bytes());
      t->clear_mod_revision();
      auto put = st.opts.store->cas_put(key, t->SerializeAsString(), expect);
      if (!put)
        return put.error();
      if (!put->succeeded)
        return changed_meanwhile(req.name());
      t->set_mod_revision(put->revision);
      st.topics[t->name()] = *t;
      return *t;
    },
    [=](const pb::AlterTopic& req,
        const std::string& home) -> caf::result<pb::ClusterTopic> {
      // A partition of `req.name()` homed on `home`, if it has none there
      // (a group's retry topic on a node that joined later).
      auto& st = self->state;
      for (int attempt = 0; attempt < 5; ++attempt) {
        auto t = read_topic(self, req.name());
        if (!t)
          return t.error();
        for (auto& h : t->homes())
          if (h == home)
            return *t;
        auto expect = t->mod_revision();
        t->add_homes(home);
        t->clear_mod_revision();
        auto put = st.opts.store->cas_put(topics_prefix(st) + req.name(),
                                          t->SerializeAsString(), expect);
        if (!put)
          return put.error();
        if (put->succeeded) {
          t->set_mod_revision(put->revision);
          st.topics[t->name()] = *t;
          EDDA_INFO("topics", "topic " << t->name() << " got partition "
                                       << t->homes_size() - 1 << " on "
                                       << home);
          return *t;
        }
      }
      return changed_meanwhile(req.name());
    },
    [=](const pb::DeleteTopic& req) -> caf::result<pb::Done> {
      auto& st = self->state;
      auto t = read_topic(self, req.name());
      if (!t)
        return t.error();
      auto del = st.opts.store->cas_delete(topics_prefix(st) + req.name(),
                                           t->mod_revision());
      if (!del)
        return del.error();
      if (!del->succeeded)
        return changed_meanwhile(req.name());
      st.topics.erase(req.name());
      pb::Done d;
      d.set_what("deleted topic " + req.name());
      return d;
    },
    [=](const pb::GetTopic& req) -> caf::result<pb::ClusterTopic> {
      auto t = read_topic(self, req.name());
      if (!t)
        return t.error();
      return *t;
    },
  };
}

} // namespace

caf::actor spawn_topic_table(caf::actor_system& sys, topic_table_options opts) {
  return sys.spawn<caf::detached>(topic_table, std::move(opts));
}

} // namespace edda::broker
