#include "replication/replica_host.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "replication/follower.hpp"
#include "storage/environment.hpp"
#include "storage/repl_position.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace edda::replication {

namespace {

namespace pb = wire::pb;
using storage::db;

struct replica_host_state {
  replica_host_options opts;
  std::map<std::string, std::shared_ptr<storage::environment>> replicas;
  /// Groups this node serves after a failover: their copy is the group's
  /// storage now (opened by the node that serves it), never written here.
  std::set<std::string> served;
  static inline const char* name = "edda.replica_host";
};

using self_ptr = caf::stateful_actor<replica_host_state>*;

/// A group is named by its leader's node id: 1-64 of [A-Za-z0-9_.-] (also
/// what makes it a safe directory name).
bool valid_group(const std::string& g) {
  if (g.empty() || g.size() > 64 || g == "." || g == "..")
    return false;
  for (char c : g)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
          || c == '-'))
      return false;
  return true;
}

/// Where the copy of `group` is kept (a standby's own group: its data dir).
std::string dir_of(const replica_host_options& o, const std::string& group) {
  return !o.own_group.empty() && group == o.own_group
           ? o.own_dir
           : replica_dir(o.dir, group);
}

caf::expected<std::shared_ptr<storage::environment>>
replica_of(self_ptr self, const std::string& group) {
  auto& st = self->state;
  if (auto i = st.replicas.find(group); i != st.replicas.end())
    return i->second;
  storage::options o;
  o.dir = dir_of(st.opts, group);
  o.map_size = st.opts.map_size;
  o.mode = st.opts.mode;
  std::error_code ec;
  std::filesystem::create_directories(o.dir, ec);
  if (ec)
    return make_error(errc::storage_error, "cannot create the replica dir "
                                             + o.dir + ": " + ec.message());
  auto env = storage::environment::open(o);
  if (!env)
    return env.error();
  EDDA_INFO("replica", "following group " << group << " in " << o.dir
                                           << " (at seq "
                                           << read_position(**env).seq
                                           << ")");
  st.replicas.emplace(group, *env);
  return *env;
}

/// db `meta` key set while a full copy is in progress (never on a leader:
/// so never copied).
constexpr const char* copy_mark_key = "repl_copy";

/// The id of the copy in progress ("" if none).
std::string copy_in_progress(const storage::environment& env) {
  auto r = env.read();
  auto v = r.get(db::meta, copy_mark_key);
  return v ? std::string{*v} : std::string{};
}

pb::ReplAck ack_of(self_ptr self, const std::string& group,
                   const storage::environment& env) {
  auto at = read_position(env);
  pb::ReplAck a;
  a.set_group(group);
  a.set_follower(self->state.opts.node_id);
  a.set_epoch(at.epoch);
  a.set_seq(at.seq);
  a.set_log_id(at.log_id);
  a.set_unfinished_copy(copy_unfinished(env));
  return a;
}

/// One write of a copy in one transaction; a bad op fails it whole.
caf::error write_all(storage::environment& env, const pb::WriteBatch& b) {
  std::vector<caf::error> failed;
  if (auto err = env.apply({&b}, failed))
    return err;
  return failed.front();
}

caf::result<pb::ReplAck> on_copy(self_ptr self, const pb::ReplShip& s,
                                 storage::environment& env) {
  const auto& c = s.copy();
  pb::WriteBatch b;
  switch (c.phase()) {
    case pb::ReplCopy::BEGIN: {
      // Never from a deposed leader: its copy would replace a newer one.
      if (auto at = read_position(env); at.epoch > s.leader_epoch())
        return make_error(errc::fenced,
                          "a full copy of group '" + s.group() + "' at epoch "
                            + std::to_string(s.leader_epoch())
                            + " refused: the copy here is at epoch "
                            + std::to_string(at.epoch));
      // Empty the copy, and mark it unfinished, in one transaction.
      for (unsigned d = 0; d < storage::db_count; ++d) {
        auto* op = b.add_ops();
        op->set_db(d);
        op->set_kind(pb::WriteOp::DEL_PREFIX);
      }
      // A standby's copy is its node's own data dir: the node's identity
      // stays through the copy (the copy brings the same one at its end).
      if (s.group() == self->state.opts.own_group) {
        std::optional<std::string> id;
        {
          auto r = env.read();
          if (auto v = r.get(db::meta, "node"))
            id = std::string{*v};
        }
        if (id) {
          auto* keep = b.add_ops();
          keep->set_db(static_cast<uint32_t>(db::meta));
          keep->set_key("node");
          keep->set_value(std::move(*id));
        }
      }
      auto* mark = b.add_ops();
      mark->set_db(static_cast<uint32_t>(db::meta));
      if (c.copy_id().empty())
        return make_error(errc::invalid_argument, "a copy needs an id");
      mark->set_key(copy_mark_key);
      mark->set_value(c.copy_id());
      EDDA_INFO("replica", "group " << s.group()
                                    << ": a full copy begins (epoch "
                                    << s.leader_epoch() << ")");
      break;
    }
    case pb::ReplCopy::DATA:
      if (c.copy_id().empty() || copy_in_progress(env) != c.copy_id())
        return make_error(errc::invalid_argument,
                          "copy data for group '" + s.group()
                            + "' of a copy not in progress");
      for (auto& op : c.ops()) {
        if (op.kind() != pb::WriteOp::PUT
            || (op.db() == static_cast<uint32_t>(db::meta)
                && op.key() == copy_mark_key))
          return make_error(errc::invalid_argument,
                            "a copy carries only puts of the leader's data");
        *b.add_ops() = op;
      }
      break;
    case pb::ReplCopy::END: {
      if (c.copy_id().empty() || copy_in_progress(env) != c.copy_id())
        return make_error(errc::invalid_argument,
                          "copy end for group '" + s.group()
                            + "' of a copy not in progress");
      auto at = read_position(env);
      if (at.epoch != c.epoch() || at.seq != c.seq())
        return make_error(errc::invalid_argument,
                          "the copy of group '" + s.group() + "' is at ("
                            + std::to_string(at.epoch) + ", "
                            + std::to_string(at.seq)
                            + "), not at the snapshot's ("
                            + std::to_string(c.epoch()) + ", "
                            + std::to_string(c.seq())
                            + "): left unfinished");
      // The copy is the leader's log up to seq as this leader has it: it
      // counts as written at this leader's epoch (a deposed leader's batch
      // of an older epoch is refused from now on, as after a shipped one).
      if (s.leader_epoch() > at.epoch) {
        pb::ReplPosition p;
        p.set_epoch(s.leader_epoch());
        p.set_seq(at.seq);
        p.set_log_id(at.log_id);
        storage::put_repl_position(b, p);
      }
      auto* op = b.add_ops();
      op->set_db(static_cast<uint32_t>(db::meta));
      op->set_key(copy_mark_key);
      op->set_kind(pb::WriteOp::DEL);
      EDDA_INFO("replica", "group " << s.group() << ": full copy done at seq "
                                    << c.seq());
      break;
    }
    default:
      return make_error(errc::invalid_argument, "unknown copy phase");
  }
  if (b.ops_size() > 0)
    if (auto err = write_all(env, b))
      return err;
  return ack_of(self, s.group(), env);
}

caf::result<pb::ReplAck> on_ship(self_ptr self, const pb::ReplShip& s) {
  if (!valid_group(s.group()))
    return make_error(errc::invalid_argument,
                      "replica group '" + s.group().substr(0, 80)
                        + "' is not a node id (1-64 of [A-Za-z0-9_.-])");
  if (self->state.served.count(s.group()) != 0)
    return make_error(errc::fenced, "group " + s.group()
                                      + " is served by this node since a "
                                        "failover: its copy here is not "
                                        "followed");
  auto env = replica_of(self, s.group());
  if (!env)
    return env.error();
  if (s.copy().phase() != pb::ReplCopy::NONE) {
    if (s.batches_size() > 0)
      return make_error(errc::invalid_argument,
                        "a ship carries a copy or batches, not both");
    return on_copy(self, s, **env);
  }
  // A copy left unfinished is never followed: the ack says so, and the
  // leader copies again.
  if (copy_unfinished(**env))
    return ack_of(self, s.group(), **env);
  auto at = read_position(**env);
  // Every applicable batch of the ship in one write (one transaction, one
  // sync): positions move on batch by batch while planning.
  pb::WriteBatch all;
  pb::WriteBatch one;
  size_t applied = 0;
  for (const auto& b : s.batches()) {
    auto v = plan(at, b, one);
    if (!v) {
      if (code_of(v.error()) == errc::invalid_argument && applied == 0
          && b.seq() > at.seq + 1)
        return ack_of(self, s.group(), **env); // a gap: send on from here
      if (applied == 0)
        return v.error();
      break; // apply what came before; the ack says where it stopped
    }
    if (*v == verdict::duplicate)
      continue;
    for (auto& op : *one.mutable_ops())
      *all.add_ops() = std::move(op);
    at = position{b.leader_epoch(), b.seq(), b.log_id()};
    ++applied;
  }
  if (applied > 0) {
    std::vector<caf::error> failed;
    if (auto err = (*env)->apply({&all}, failed)) {
      EDDA_ERROR("replica", "group " << s.group()
                                     << ": write failed: " << render(err));
      return err;
    }
    if (failed.front())
      return failed.front(); // a bad op: nothing of the ship was written
    metrics::counter("replication.batches_applied") += applied;
  }
  return ack_of(self, s.group(), **env);
}

/// Where the copy of `group` is, without creating one (log_id empty: no
/// copy here).
caf::result<pb::ReplAck> on_query(self_ptr self, const std::string& group) {
  auto& st = self->state;
  if (!valid_group(group))
    return make_error(errc::invalid_argument,
                      "replica group '" + group.substr(0, 80)
                        + "' is not a node id");
  if (st.served.count(group) != 0)
    return make_error(errc::unavailable,
                      "group " + group + " is served by this node");
  std::error_code ec;
  if (st.replicas.count(group) == 0
      && !std::filesystem::exists(dir_of(st.opts, group), ec)) {
    pb::ReplAck a;
    a.set_group(group);
    a.set_follower(st.opts.node_id);
    return a;
  }
  auto env = replica_of(self, group);
  if (!env)
    return env.error();
  return ack_of(self, group, **env);
}

caf::behavior replica_host(self_ptr self, replica_host_options opts) {
  self->state.opts = std::move(opts);
  return {
    [=](const pb::ReplShip& s) -> caf::result<pb::ReplAck> {
      return on_ship(self, s);
    },
    [=](const pb::ReplPositionQuery& q) -> caf::result<pb::ReplAck> {
      return on_query(self, q.group());
    },
    [=](wire::release_atom, const std::string& group, bool serve) {
      // serve: this node is to serve the group from its copy (a
      // failover): the copy is closed here (its environment may be opened
      // once per process) and no ship is applied to it any more. !serve:
      // the node no longer serves it; the copy is followed again.
      auto& st = self->state;
      if (serve) {
        st.replicas.erase(group);
        st.served.insert(group);
        EDDA_INFO("replica", "group " << group
                                      << ": its copy here is closed; this "
                                         "node serves the group from it");
      } else if (st.served.erase(group) != 0) {
        EDDA_INFO("replica", "group " << group
                                      << ": no longer served here; its copy "
                                         "is followed again");
      }
      return true;
    },
  };
}

} // namespace

bool copy_unfinished(const storage::environment& env) {
  auto r = env.read();
  return r.get(db::meta, copy_mark_key).has_value();
}

std::string replica_dir(const std::string& dir, const std::string& group) {
  return (std::filesystem::path{dir} / group).string();
}

caf::actor spawn_replica_host(caf::actor_system& sys,
                              replica_host_options opts) {
  return sys.spawn<caf::detached>(replica_host, std::move(opts));
}

} // namespace edda::replication
