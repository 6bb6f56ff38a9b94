#include "coord/fake.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "coord/detail.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

namespace edda::coord {

namespace {

bool has_prefix(const std::string& key, const std::string& prefix) {
  return key.compare(0, prefix.size(), prefix) == 0;
}

/// One watch: its queue of batches and the thread that delivers them. The
/// store pushes under its own mutex; the thread calls back holding no lock,
/// so a callback may call into the store.
struct fake_watcher {
  uint64_t client = 0;
  std::string prefix;
  int64_t from_revision = 0; // events of earlier revisions are not its
  watch_handlers handlers;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<watch_event>> batches; // guarded by mu
  caf::error error;                             // guarded by mu
  bool ended = false;     // guarded by mu: deliver `error` after the batches
  bool cancelled = false; // guarded by mu: stop, deliver nothing more

  void push(std::vector<watch_event> events) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (ended)
        return;
      batches.push_back(std::move(events));
    }
    cv.notify_all();
  }

  void fail(caf::error err) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (ended)
        return;
      ended = true;
      error = std::move(err);
    }
    cv.notify_all();
  }

  void run() {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return cancelled || ended || !batches.empty(); });
      if (cancelled)
        return;
      if (!batches.empty()) {
        auto batch = std::move(batches.front());
        batches.pop_front();
        lk.unlock();
        if (handlers.on_events)
          handlers.on_events(batch);
        lk.lock();
        continue;
      }
      auto err = error;
      lk.unlock();
      if (handlers.on_error)
        handlers.on_error(err);
      return;
    }
  }
};

caf::error cut_error() {
  return make_error(errc::unavailable, "fake: client cut off from the store");
}

} // namespace

struct fake_store::state {
  struct lease {
    std::chrono::seconds ttl{0};
    std::chrono::milliseconds expires{0};
    std::set<std::string> keys;
  };
  struct record {
    int64_t revision = 0;
    std::vector<watch_event> events;
  };

  mutable std::mutex mu;
  int64_t revision = 1; // a new etcd starts at revision 1
  int64_t compacted = 0;
  std::chrono::milliseconds now{0};
  std::map<std::string, key_value> kvs;
  std::map<lease_id, lease> leases;
  lease_id next_lease = 0x65dd0001;
  std::deque<record> history; // every revision from `compacted` on
  std::vector<std::shared_ptr<fake_watcher>> watchers;
  std::set<uint64_t> cut_clients;
  uint64_t next_client = 1;

  // -- all of the following with `mu` held -----------------------------------

  caf::error check_cut(uint64_t client) const {
    if (cut_clients.count(client) > 0)
      return cut_error();
    return {};
  }

  /// Makes `events` (all of revision `revision + 1`) the next revision.
  void publish(std::vector<watch_event> events) {
    ++revision;
    for (auto& w : watchers) {
      if (revision < w->from_revision)
        continue;
      std::vector<watch_event> mine;
      for (auto& ev : events)
        if (has_prefix(ev.kv.key, w->prefix))
          mine.push_back(ev);
      if (!mine.empty())
        w->push(std::move(mine));
    }
    history.push_back(record{revision, std::move(events)});
  }

  void unbind(const key_value& kv) {
    if (kv.lease == 0)
      return;
    if (auto i = leases.find(kv.lease); i != leases.end())
      i->second.keys.erase(kv.key);
  }

  /// Deletes the keys of lease `i` in one revision (none if it had no keys)
  /// and forgets the lease.
  void drop_lease(std::map<lease_id, lease>::iterator i) {
    std::vector<watch_event> events;
    for (auto& key : i->second.keys) {
      auto k = kvs.find(key);
      if (k == kvs.end())
        continue;
      watch_event ev;
      ev.type = watch_event::kind::del;
      ev.kv.key = key;
      ev.kv.mod_revision = revision + 1;
      events.push_back(std::move(ev));
      kvs.erase(k);
    }
    leases.erase(i);
    if (!events.empty())
      publish(std::move(events));
  }

  void expire_leases() {
    for (;;) {
      auto first = leases.end();
      for (auto i = leases.begin(); i != leases.end(); ++i)
        if (i->second.expires <= now
            && (first == leases.end()
                || i->second.expires < first->second.expires))
          first = i;
      if (first == leases.end())
        return;
      drop_lease(first);
    }
  }

  void remove_watcher(const std::shared_ptr<fake_watcher>& w) {
    watchers.erase(std::remove(watchers.begin(), watchers.end(), w),
                   watchers.end());
  }
};

namespace {

using state_ptr = std::shared_ptr<fake_store::state>;

class fake_watch final : public watch {
public:
  fake_watch(state_ptr st, std::shared_ptr<fake_watcher> w)
      : st_(std::move(st)), w_(std::move(w)), thread_([w = w_] { w->run(); }) {}

  ~fake_watch() override {
    cancel();
  }

  void cancel() override {
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      st_->remove_watcher(w_);
    }
    {
      std::lock_guard<std::mutex> lk(w_->mu);
      w_->cancelled = true;
    }
    w_->cv.notify_all();
    if (!thread_.joinable())
      return;
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach(); // cancelled from its own callback: ends on return
    else
      thread_.join();
  }

private:
  state_ptr st_;
  std::shared_ptr<fake_watcher> w_;
  std::thread thread_;
};

class fake_client final : public client {
public:
  fake_client(state_ptr st, uint64_t id) : st_(std::move(st)), id_(id) {}

  const state_ptr& store() const {
    return st_;
  }

  uint64_t id() const {
    return id_;
  }

  caf::expected<lease_id> grant(std::chrono::seconds ttl) override {
    if (auto err = detail::check_ttl(ttl))
      return err;
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    auto id = st_->next_lease++;
    auto& l = st_->leases[id];
    l.ttl = ttl;
    l.expires = st_->now + ttl;
    return id;
  }

  caf::expected<std::chrono::seconds> keepalive(lease_id id) override {
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    auto i = st_->leases.find(id);
    if (i == st_->leases.end())
      return lease_not_found(id);
    i->second.expires = st_->now + i->second.ttl;
    return i->second.ttl;
  }

  caf::error revoke(lease_id id) override {
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    auto i = st_->leases.find(id);
    if (i == st_->leases.end())
      return lease_not_found(id);
    st_->drop_lease(i);
    return {};
  }

  caf::expected<std::pair<std::optional<key_value>, int64_t>>
  get(const std::string& key) override {
    if (auto err = detail::check_key(key))
      return err;
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    return std::make_pair(find(key), st_->revision);
  }

  caf::expected<range_result> get_prefix(const std::string& prefix) override {
    if (auto err = detail::check_key(prefix))
      return err;
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    range_result out;
    out.revision = st_->revision;
    for (auto i = st_->kvs.lower_bound(prefix);
         i != st_->kvs.end() && has_prefix(i->first, prefix); ++i)
      out.kvs.push_back(i->second);
    return out;
  }

  caf::expected<cas_result> cas_put(const std::string& key,
                                    const std::string& value,
                                    int64_t expect_mod_revision,
                                    lease_id lease) override {
    if (auto err = detail::check_put(key, value))
      return err;
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    return cas_put_locked(key, value, expect_mod_revision, lease);
  }

  /// cas_put with st_->mu held.
  caf::expected<cas_result> cas_put_locked(const std::string& key,
                                           const std::string& value,
                                           int64_t expect_mod_revision,
                                           lease_id lease) {
    cas_result out;
    auto cur = find(key);
    if ((cur ? cur->mod_revision : 0) != expect_mod_revision) {
      out.revision = st_->revision;
      out.current = std::move(cur);
      return out;
    }
    auto l = st_->leases.end();
    if (lease != 0) {
      l = st_->leases.find(lease);
      if (l == st_->leases.end())
        return lease_not_found(lease);
    }
    auto rev = st_->revision + 1;
    key_value kv;
    kv.key = key;
    kv.value = value;
    kv.create_revision = cur ? cur->create_revision : rev;
    kv.mod_revision = rev;
    kv.version = cur ? cur->version + 1 : 1;
    kv.lease = lease;
    if (cur)
      st_->unbind(*cur);
    if (l != st_->leases.end())
      l->second.keys.insert(key);
    st_->kvs[key] = kv;
    watch_event ev;
    ev.type = watch_event::kind::put;
    ev.kv = kv;
    st_->publish({std::move(ev)});
    out.succeeded = true;
    out.revision = rev;
    out.current = std::move(kv);
    return out;
  }

  caf::expected<cas_result>
  cas_put_guarded(const std::string& key, const std::string& value,
                  int64_t expect_mod_revision, const std::string& guard_key,
                  int64_t guard_create_revision,
                  const std::string& absent_key) override {
    if (auto err = detail::check_put(key, value))
      return err;
    if (auto err = detail::check_key(guard_key))
      return err;
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    auto g = find(guard_key);
    if (!g || g->create_revision != guard_create_revision
        || (!absent_key.empty() && find(absent_key))) {
      cas_result out;
      out.revision = st_->revision;
      out.current = find(key);
      return out;
    }
    return cas_put_locked(key, value, expect_mod_revision, 0);
  }

  caf::expected<cas_result> cas_delete(const std::string& key,
                                       int64_t expect_mod_revision) override {
    if (auto err = detail::check_key(key))
      return err;
    std::lock_guard<std::mutex> lk(st_->mu);
    if (auto err = st_->check_cut(id_))
      return err;
    cas_result out;
    auto cur = find(key);
    if ((cur ? cur->mod_revision : 0) != expect_mod_revision) {
      out.revision = st_->revision;
      out.current = std::move(cur);
      return out;
    }
    out.succeeded = true;
    if (cur) { // deleting an absent key changes nothing: no revision
      st_->unbind(*cur);
      st_->kvs.erase(key);
      watch_event ev;
      ev.type = watch_event::kind::del;
      ev.kv.key = key;
      ev.kv.mod_revision = st_->revision + 1;
      st_->publish({std::move(ev)});
    }
    out.revision = st_->revision;
    return out;
  }

  caf::expected<std::unique_ptr<watch>>
  watch_prefix(const std::string& prefix, int64_t from_revision,
               watch_handlers handlers) override {
    if (auto err = detail::check_key(prefix))
      return err;
    auto w = std::make_shared<fake_watcher>();
    w->client = id_;
    w->prefix = prefix;
    w->handlers = std::move(handlers);
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      if (auto err = st_->check_cut(id_))
        return err;
      if (from_revision <= 0)
        from_revision = st_->revision + 1;
      w->from_revision = from_revision;
      if (from_revision < st_->compacted) {
        w->fail(
          make_error(errc::compacted, "fake: watch from revision "
                                        + std::to_string(from_revision)
                                        + " but the store is compacted up to "
                                        + std::to_string(st_->compacted)));
      } else {
        std::vector<watch_event> replay;
        for (auto& rec : st_->history)
          if (rec.revision >= from_revision)
            for (auto& ev : rec.events)
              if (has_prefix(ev.kv.key, prefix))
                replay.push_back(ev);
        if (!replay.empty())
          w->push(std::move(replay));
        st_->watchers.push_back(w);
      }
    }
    return std::unique_ptr<watch>{new fake_watch(st_, std::move(w))};
  }

  std::string describe() const override {
    return "fake";
  }

private:
  static caf::error lease_not_found(lease_id id) {
    return make_error(errc::not_found,
                      "fake: lease " + std::to_string(id) + " not found");
  }

  /// With st_->mu held.
  std::optional<key_value> find(const std::string& key) const {
    auto i = st_->kvs.find(key);
    if (i == st_->kvs.end())
      return std::nullopt;
    return i->second;
  }

  state_ptr st_;
  uint64_t id_;
};

} // namespace

fake_store::fake_store() : state_(std::make_shared<state>()) {}

fake_store::~fake_store() = default;

client_ptr fake_store::connect() {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lk(state_->mu);
    id = state_->next_client++;
  }
  return std::make_shared<fake_client>(state_, id);
}

void fake_store::advance(std::chrono::milliseconds d) {
  std::lock_guard<std::mutex> lk(state_->mu);
  state_->now += d;
  state_->expire_leases();
}

void fake_store::cut(const client_ptr& c, bool cut_off) {
  auto fc = dynamic_cast<fake_client*>(c.get());
  EDDA_ASSERT(fc != nullptr && fc->store() == state_,
              "fake_store::cut of a client of another store");
  std::lock_guard<std::mutex> lk(state_->mu);
  if (!cut_off) {
    state_->cut_clients.erase(fc->id());
    return;
  }
  state_->cut_clients.insert(fc->id());
  auto& ws = state_->watchers;
  for (auto i = ws.begin(); i != ws.end();) {
    if ((*i)->client == fc->id()) {
      (*i)->fail(cut_error());
      i = ws.erase(i);
    } else {
      ++i;
    }
  }
}

void fake_store::compact(int64_t revision) {
  std::lock_guard<std::mutex> lk(state_->mu);
  auto& st = *state_;
  st.compacted = std::max(st.compacted, std::min(revision, st.revision));
  while (!st.history.empty() && st.history.front().revision < st.compacted)
    st.history.pop_front();
}

int64_t fake_store::revision() const {
  std::lock_guard<std::mutex> lk(state_->mu);
  return state_->revision;
}

} // namespace edda::coord
