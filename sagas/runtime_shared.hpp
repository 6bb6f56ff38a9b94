// Internal to the saga runtime: what its actors are given when they are
// spawned (the saga types with the actors that carry out their steps, the
// topic manager, the outboxes) and the record helpers that shards and
// instances both use. Include only in actor translation units (it pulls in
// the generated protobuf headers).
#pragma once

#include "sagas/saga.hpp"
#include "storage/environment.hpp"
#include "wire/types.hpp"

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace edda::sagas {

/// Who carries out each part of a step.
struct step_actors {
  caf::actor action, compensation, confirm;
};

/// Per type: the definition and its step actors.
struct type_entry {
  definition_ptr def;
  std::vector<step_actors> steps;
};

using registry = std::map<std::string, type_entry>;

/// Named participants as registered by participant processes
/// (ParticipantRegister); read by instances, written by the directory
/// actor.
class directory_table {
public:
  struct entry {
    caf::actor who;
    bool batches = false; ///< answers StepBatch too
  };

  /// One of the actors serving `name` (in turn), or none.
  entry pick(const std::string& name) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = by_name_.find(name);
    if (i == by_name_.end() || i->second.empty())
      return {};
    return i->second[next_++ % i->second.size()];
  }
  /// Whether anyone serves `name` (does not take a turn).
  bool has(const std::string& name) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = by_name_.find(name);
    return i != by_name_.end() && !i->second.empty();
  }
  void add(const std::string& name, const caf::actor& a, bool batches) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& v = by_name_[name];
    for (auto& e : v)
      if (e.who == a) {
        e.batches = batches;
        return;
      }
    v.push_back(entry{a, batches});
  }
  /// Forgets `a` everywhere; returns how many names it served.
  size_t remove(const caf::actor_addr& a) {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t n = 0;
    for (auto& [name, v] : by_name_) {
      auto before = v.size();
      v.erase(std::remove_if(v.begin(), v.end(),
                             [&](const entry& x) {
                               // The same proxy, not one made since for
                               // the same remote actor (same address).
                               return caf::actor_cast<caf::actor_control_block*>(x.who)
                                      == a.get();
                             }),
              v.end());
      n += before - v.size();
    }
    return n;
  }

private:
  std::mutex mtx_;
  std::map<std::string, std::vector<entry>> by_name_;
  size_t next_ = 0;
};

/// What shards and instances share: the types, the named participants and
/// the topics (reliable-message steps append through it).
struct runtime_shared {
  registry reg;
  std::shared_ptr<directory_table> directory;
  caf::actor topics;
  std::vector<caf::actor> outboxes; // batch commands to named participants
};
using shared_env = std::shared_ptr<const runtime_shared>;

inline saga_state state_of(const wire::v1::SagaRecord& r) {
  return static_cast<saga_state>(r.state());
}

/// The write that stores a record's bytes (db saga, key: its id).
inline wire::v1::WriteBatch record_write(const std::string& id,
                                         std::string bytes) {
  wire::v1::WriteBatch b;
  auto* op = b.add_ops();
  op->set_db(static_cast<uint32_t>(storage::db::saga));
  op->set_key(id);
  op->set_value(std::move(bytes));
  return b;
}

/// The write that stores `rec` as it is now.
inline wire::v1::WriteBatch record_write(const wire::v1::SagaRecord& rec) {
  return record_write(rec.id(), rec.SerializeAsString());
}

} // namespace edda::sagas
