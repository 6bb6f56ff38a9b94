#include "node/hosting.hpp"

#include "node/embedded_node.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "replication/group_record.hpp"
#include "replication/replica_host.hpp"
#include "wire/types.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace edda::node {

using steady = std::chrono::steady_clock;

struct hosting::impl {
  caf::actor_system& sys;
  hosting_options opts;
  struct hosted {
    std::unique_ptr<embedded_node> node;
    std::shared_ptr<std::atomic<bool>> ended; ///< stopped on its own
    std::string endpoint;
  };
  mutable std::mutex mu; // guards groups (served() reads it)
  std::map<std::string, hosted> groups;
  std::map<std::string, steady::time_point> retry_at;
  std::atomic<bool> stopping{false};
  std::mutex cv_mu;
  std::condition_variable cv;
  std::thread thread;

  impl(caf::actor_system& s, hosting_options o) : sys(s), opts(std::move(o)) {
  }

  /// Tells the replica host to close (serve) or follow again a copy.
  bool release(const std::string& group, bool serve) {
    bool ok = false;
    caf::scoped_actor self{sys};
    self
      ->request(opts.replicas, std::chrono::seconds(10),
                wire::release_atom::value, group, serve)
      .receive([&](bool) { ok = true; },
               [&](caf::error& err) {
                 EDDA_ERROR("hosting", "group " << group
                                                << ": the replica host did "
                                                   "not answer: "
                                                << render(err));
               });
    return ok;
  }

  void host(const std::string& group) {
    if (!release(group, true))
      return;
    auto s = opts.settings;
    s.name = group;
    s.data_dir = replication::replica_dir(opts.settings.data_dir + "/replicas",
                                          group);
    s.listen_port = 0;
    s.advertise.clear();
    start_options so;
    so.sagas = opts.sagas;
    so.hosted_by = opts.node_id;
    so.advertise_host = opts.advertise_host;
    so.cancel = &stopping;
    auto ended = std::make_shared<std::atomic<bool>>(false);
    so.on_fatal = [ended, group](const caf::error& why) {
      EDDA_WARN("hosting", "group " << group << " stopped here: "
                                    << render(why));
      ended->store(true);
    };
    EDDA_WARN("hosting", "the controller elected this node's copy of group "
                           << group << ": serving it from " << s.data_dir);
    auto n = embedded_node::start(s, std::move(so));
    if (!n) {
      EDDA_ERROR("hosting", "group " << group << ": cannot serve it here: "
                                     << render(n.error())
                                     << "; trying again in 2 s");
      release(group, false);
      retry_at[group] = steady::now() + std::chrono::seconds(2);
      return;
    }
    hosted h;
    h.endpoint = (*n)->endpoint();
    h.node = std::move(*n);
    h.ended = std::move(ended);
    EDDA_WARN("hosting", "serving group " << group << " at " << h.endpoint);
    std::lock_guard<std::mutex> guard{mu};
    groups.emplace(group, std::move(h));
  }

  void drop(const std::string& group, const std::string& why) {
    std::unique_ptr<embedded_node> n;
    {
      std::lock_guard<std::mutex> guard{mu};
      auto i = groups.find(group);
      if (i == groups.end())
        return;
      n = std::move(i->second.node);
      groups.erase(i);
    }
    EDDA_WARN("hosting", "no longer serving group " << group << ": " << why);
    n->stop();
    n.reset();
    release(group, false);
  }

  void scan() {
    auto recs = replication::list_groups(*opts.store,
                                         opts.settings.cluster_name);
    if (!recs)
      return; // etcd: the next round
    std::vector<std::pair<std::string, std::string>> to_drop;
    {
      std::lock_guard<std::mutex> guard{mu};
      for (auto& [g, h] : groups) {
        auto r = recs->find(g);
        if (h.ended->load())
          to_drop.emplace_back(g, "it stopped");
        else if (r == recs->end() || r->second.rec.host() != opts.node_id)
          to_drop.emplace_back(g, "its record names another host");
        else if (!r->second.rec.move_to().empty())
          to_drop.emplace_back(g, "it moves to " + r->second.rec.move_to());
      }
    }
    for (auto& [g, why] : to_drop)
      drop(g, why);
    for (auto& [g, entry] : *recs) {
      auto& r = entry.rec;
      if (stopping.load())
        return;
      if (r.host() != opts.node_id || g == opts.node_id || r.leader() != g
          || !r.move_to().empty())
        continue;
      {
        std::lock_guard<std::mutex> guard{mu};
        if (groups.count(g) != 0)
          continue;
      }
      if (auto t = retry_at.find(g);
          t != retry_at.end() && steady::now() < t->second)
        continue;
      host(g);
    }
  }

  void run() {
    while (!stopping.load()) {
      scan();
      std::unique_lock<std::mutex> lk{cv_mu};
      cv.wait_for(lk, std::chrono::milliseconds(500),
                  [this] { return stopping.load(); });
    }
  }
};

hosting::hosting(caf::actor_system& sys, hosting_options opts)
  : impl_(std::make_unique<impl>(sys, std::move(opts))) {
  impl_->thread = std::thread([p = impl_.get()] { p->run(); });
}

hosting::~hosting() {
  stop();
}

void hosting::stop() {
  auto& i = *impl_;
  {
    std::lock_guard<std::mutex> lk{i.cv_mu};
    i.stopping = true;
  }
  i.cv.notify_all();
  if (i.thread.joinable())
    i.thread.join();
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> guard{i.mu};
    for (auto& [g, h] : i.groups)
      names.push_back(g);
  }
  for (auto& g : names)
    i.drop(g, "this node stops");
}

std::vector<std::string> hosting::served() const {
  std::lock_guard<std::mutex> guard{impl_->mu};
  std::vector<std::string> out;
  for (auto& [g, h] : impl_->groups)
    out.push_back(g + "@" + h.endpoint);
  return out;
}

} // namespace edda::node
