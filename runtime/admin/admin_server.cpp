#include "admin/admin_server.hpp"
#include "admin/console_api.hpp"
#include "admin/prometheus.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "base/metrics.hpp"
#include "client/admin.hpp"
#include "sagas/saga.hpp"

#include <httplib.h>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <thread>

namespace edda::admin {

namespace pb = edda::wire::v1;

namespace {

constexpr uint32_t count_cap = 10000; // sagas / transactions counted per scrape

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

const char* routes_text = "routes: GET /metrics, GET /health, GET /ready, "
                          "GET / (the console), GET and POST /api/...";

/// The latency histograms of this process (metrics::latency), one family
/// each, in seconds.
void latency_families(exposition& x) {
  static const std::map<std::string, const char*> help{
    {"storage.commit",
     "time to apply and sync one LMDB write transaction (writes batched "
     "into one commit)"},
    {"sagas.step",
     "time from sending a saga step to its participant's answer or "
     "timeout, by part"},
    {"sagas.duration",
     "time from a saga's start to its end (wall clock, restarts "
     "included), by final state"},
  };
  std::vector<double> bounds(metrics::histogram::bounds.begin(),
                             metrics::histogram::bounds.end());
  std::string current;
  for (auto& h : metrics::histograms()) {
    if (h.name != current) {
      current = h.name;
      auto it = help.find(h.name);
      x.family("edda_" + h.name + "_seconds", "histogram",
               it != help.end() ? it->second : "edda latency " + h.name);
    }
    labels l;
    if (!h.label.empty())
      l.emplace_back(h.label, h.value);
    x.histogram(l, bounds,
                std::vector<uint64_t>(h.data.buckets.begin(),
                                      h.data.buckets.end()),
                h.data.count, h.data.sum);
  }
}

} // namespace

std::string collect_metrics(const client::connection& node) {
  exposition x;
  std::vector<std::string> failed; // sections that could not be read
  auto ns = client::admin::node_status(node);
  x.family("edda_up", "gauge", "1 when the node answered this scrape");
  x.sample(ns ? 1.0 : 0.0);
  if (ns) {
    x.family("edda_lmdb_map_size_bytes", "gauge",
             "size of the LMDB map (storage.map_size)");
    x.sample(static_cast<double>(ns->map_size()));
    x.family("edda_lmdb_map_used_bytes", "gauge",
             "bytes of the LMDB map in use");
    x.sample(static_cast<double>(ns->map_used()));
    x.family("edda_lmdb_map_used_ratio", "gauge",
             "map used / map size (at 1 writes fail: map_full)");
    x.sample(ns->map_size() == 0 ? 0.0
                                 : static_cast<double>(ns->map_used())
                                     / static_cast<double>(ns->map_size()));
    std::map<std::string, uint64_t> sorted(ns->counters().begin(),
                                           ns->counters().end());
    for (auto& [name, value] : sorted) {
      x.family("edda_" + name + "_total", "counter",
               "edda counter " + name + " since the process started");
      x.sample(static_cast<double>(value));
    }
  } else {
    failed.push_back("node");
  }
  latency_families(x);

  // Topics: offsets per partition, and per group the committed offset, the
  // lag and what is delivered but not settled.
  auto listed = client::admin::list_topics(node, true);
  caf::expected<pb::TopicList> topics{pb::TopicList{}};
  if (!listed) {
    topics = listed.error();
  } else {
    // The list names them; a description has partitions and groups.
    for (auto& t : listed->topics()) {
      if (auto d = client::admin::describe_topic(node, t.meta().name()))
        *topics->add_topics() = std::move(*d);
      else
        failed.push_back("topic " + t.meta().name());
    }
  }
  if (topics) {
    // A partition whose home is down has no offsets to say (the node
    // lists it with zeros): only edda_partition_unavailable has it, so a
    // graph shows a gap, not a drop to 0.
    x.family("edda_partition_end_offset", "gauge",
             "next offset to be written in the partition");
    for (auto& t : topics->topics())
      for (auto& p : t.partitions())
        if (!p.unavailable())
          x.sample({{"topic", t.meta().name()},
                    {"partition", std::to_string(p.partition())},
                    {"home", p.home()}},
                   static_cast<double>(p.end_offset()));
    x.family("edda_partition_low_watermark", "gauge",
             "the oldest offset the partition still keeps (retention)");
    for (auto& t : topics->topics())
      for (auto& p : t.partitions())
        if (!p.unavailable())
          x.sample({{"topic", t.meta().name()},
                    {"partition", std::to_string(p.partition())},
                    {"home", p.home()}},
                   static_cast<double>(p.low_watermark()));
    x.family("edda_partition_messages", "gauge",
             "messages stored in the partition");
    for (auto& t : topics->topics())
      for (auto& p : t.partitions())
        if (!p.unavailable())
          x.sample({{"topic", t.meta().name()},
                    {"partition", std::to_string(p.partition())}},
                   static_cast<double>(p.message_count()));
    x.family("edda_partition_unavailable", "gauge",
             "1 when the partition's home is down or unreachable");
    for (auto& t : topics->topics())
      for (auto& p : t.partitions())
        x.sample({{"topic", t.meta().name()},
                  {"partition", std::to_string(p.partition())}},
                 p.unavailable() ? 1.0 : 0.0);
    for (auto [name, help] :
         {std::pair<const char*, const char*>{
            "edda_group_lag", "messages of the partition the group has not "
                              "acknowledged yet"},
          {"edda_group_committed_offset",
           "lowest offset the group has not acknowledged"},
          {"edda_group_inflight",
           "messages delivered to the group and not settled yet"}}) {
      x.family(name, "gauge", help);
      for (auto& t : topics->topics())
        for (auto& g : t.groups()) {
          auto value = std::string{name} == "edda_group_lag" ? g.lag()
                       : std::string{name} == "edda_group_committed_offset"
                         ? g.committed()
                         : g.inflight();
          x.sample({{"group", g.cursor()},
                    {"topic", t.meta().name()},
                    {"partition", std::to_string(g.partition())}},
                   static_cast<double>(value));
        }
    }
  } else {
    failed.push_back("topics");
  }

  // Groups: members and dead letters.
  if (auto groups = client::admin::list_groups(node)) {
    x.family("edda_group_members", "gauge", "consumers in the group");
    for (auto& g : groups->groups())
      x.sample({{"group", g.group()}}, g.members_size());
    x.family("edda_dlq_depth", "gauge",
             "dead letters of the group waiting for redrive (at most 10000 "
             "counted)");
    for (auto& g : groups->groups()) {
      if (auto d = client::admin::dlq_list(node, g.group(), count_cap, 1))
        x.sample({{"group", g.group()}}, d->entries_size());
      else
        failed.push_back("dlq " + g.group());
    }
  } else {
    failed.push_back("groups");
  }

  // Transactions without an outcome.
  if (auto txns = client::admin::txn_list(node, count_cap)) {
    x.family("edda_transactions_in_doubt", "gauge",
             "half messages without an outcome (at most 10000 counted)");
    x.sample(txns->records_size());
    int64_t oldest = 0;
    for (auto& r : txns->records())
      if (oldest == 0 || r.created_ms() < oldest)
        oldest = r.created_ms();
    x.family("edda_transaction_oldest_in_doubt_seconds", "gauge",
             "age of the oldest transaction without an outcome (0: none)");
    auto now = txns->now_ms() != 0 ? txns->now_ms() : now_ms(); // the node's
    x.sample(oldest == 0
               ? 0.0
               : static_cast<double>(std::max<int64_t>(0, now - oldest))
                   / 1000.0);
    x.family("edda_transactions_orphaned", "gauge",
             "transactions in doubt with no producer of their group alive to "
             "answer a check-back (only an operator or a new producer settles "
             "them)");
    x.sample(static_cast<double>(
      std::count_if(txns->records().begin(), txns->records().end(),
                    [](const pb::TxnRecord& r) { return r.orphaned(); })));
  } else {
    failed.push_back("transactions");
  }

  // Sagas that are not over, and those that need an operator.
  x.family("edda_sagas", "gauge",
           "sagas by state: running, compensating, failed (at most 10000 "
           "counted per state)");
  for (auto s : {sagas::saga_state::running, sagas::saga_state::compensating,
                 sagas::saga_state::failed}) {
    pb::SagaList q;
    q.set_state(static_cast<uint32_t>(s));
    q.set_limit(count_cap);
    if (auto r = client::admin::saga_list(node, q))
      x.sample({{"state", sagas::to_string(s)}}, r->records_size());
    else
      failed.push_back(std::string{"sagas "} + sagas::to_string(s));
  }

  // The cluster as this node sees it.
  if (auto cs = client::admin::cluster_status(node)) {
    x.family("edda_cluster_clustered", "gauge",
             "1 in a cluster (etcd), 0 on a single node");
    x.sample(cs->clustered() ? 1.0 : 0.0);
    if (cs->clustered()) {
      x.family("edda_cluster_fenced", "gauge",
               "1 while this node has no lease (it serves nothing movable)");
      x.sample(cs->fenced() ? 1.0 : 0.0);
      x.family("edda_cluster_lease_renewed_seconds_ago", "gauge",
               "since this node last renewed its lease in etcd");
      x.sample(static_cast<double>(cs->renewed_ms_ago()) / 1000.0);
      x.family("edda_cluster_members", "gauge", "members in etcd");
      x.sample(cs->members_size());
      x.family("edda_cluster_member_linked", "gauge",
               "1 when this node's link to the member is up (itself: 1)");
      for (auto& m : cs->members())
        x.sample({{"node", m.node_id()}}, m.connected() ? 1.0 : 0.0);
      x.family("edda_cluster_member_partitions", "gauge",
               "partitions homed on the member");
      for (auto& m : cs->members())
        x.sample({{"node", m.node_id()}}, m.partitions());
    }
  } else {
    failed.push_back("cluster");
  }

  x.family("edda_scrape_errors", "gauge",
           "parts of this scrape the node did not answer (see the log)");
  x.sample(static_cast<double>(failed.size()));
  for (auto& f : failed)
    EDDA_WARN("admin", "/metrics: no answer for " << f);
  return x.text();
}

struct server::impl {
  httplib::Server http;
  std::thread thread;
  std::atomic<bool> listened{false}; ///< listen_after_bind returned
  uint16_t port = 0;
  client::connection node;
  explicit impl(client::connection n) : node(std::move(n)) {
  }
};

server::server(std::unique_ptr<impl> i) : impl_(std::move(i)) {
}

server::~server() {
  stop();
}

void server::stop() {
  if (!impl_)
    return;
  // start() waited until the server ran (or gave up): stop() reaches it.
  impl_->http.stop();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

uint16_t server::port() const {
  return impl_->port;
}

caf::expected<std::unique_ptr<server>>
server::start(const std::string& host, uint16_t port, client::connection node) {
  auto im = std::make_unique<impl>(std::move(node));
  auto& http = im->http;
  http.new_task_queue = [] { return new httplib::ThreadPool(4); };
  http.set_read_timeout(5, 0);
  http.set_write_timeout(5, 0);
  // One request per connection: no idle connection parks a thread.
  http.set_keep_alive_max_count(1);
  http.set_payload_max_length(console_body_limit);
  // SO_REUSEADDR only (httplib's default is SO_REUSEPORT, with which a
  // second node binds the same port and takes half the requests).
  http.set_socket_options([](int fd) {
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Only GET (and HEAD) is served, and POST for the console's actions
  // under /api/ (a Content-Length of at most 64 KiB); anything else is
  // answered before its body is read (a chunked body is not bounded by
  // the payload limit).
  // Bound to a loopback address, only loopback names may be asked for: a
  // DNS name rebound to 127.0.0.1 by a web page reaches nothing (421).
  bool loopback = host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
  // No page of another site may frame the console.
  http.set_default_headers({{"X-Frame-Options", "DENY"},
                            {"Content-Security-Policy",
                             "frame-ancestors 'none'"}});
  http.set_pre_routing_handler([loopback](const httplib::Request& req,
                                          httplib::Response& res) {
    if (loopback && req.has_header("Host")) {
      auto h = req.get_header_value("Host");
      auto name = h.rfind("[", 0) == 0 ? h.substr(0, h.find(']') + 1)
                                       : h.substr(0, h.find(':'));
      if (name != "127.0.0.1" && name != "localhost" && name != "[::1]") {
        res.status = 421;
        res.set_header("Connection", "close");
        res.set_content("Host '" + h + "' is not this port's (a loopback "
                        "address): refused\n",
                        "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if ((req.method == "GET" || req.method == "HEAD")
        && req.path.rfind("/api/", 0) == 0 && !same_site(req)) {
      res.status = 403;
      res.set_content("{\"error\": \"a read from another site is refused\"}\n",
                      "application/json; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "GET" || req.method == "HEAD")
      return httplib::Server::HandlerResponse::Unhandled;
    switch (check_console_post(req, res)) {
      case console_post::allowed:
        return httplib::Server::HandlerResponse::Unhandled;
      case console_post::refused:
        return httplib::Server::HandlerResponse::Handled;
      case console_post::not_ours:
        break;
    }
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_header("Connection", "close");
    res.set_content(req.method + " " + req.path
                      + ": only GET (and POST under /api/); " + routes_text
                      + "\n",
                    "text/plain; charset=utf-8");
    return httplib::Server::HandlerResponse::Handled;
  });
  auto* self = im.get();
  auto text = [](httplib::Response& res, int status, const std::string& body) {
    res.status = status;
    res.set_content(body, "text/plain; charset=utf-8");
  };
  http.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content(collect_metrics(self->node),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/health", [self, text](const httplib::Request&,
                                   httplib::Response& res) {
    auto ns = client::admin::node_status(self->node);
    if (ns)
      text(res, 200, "ok\n");
    else
      text(res, 503, "the node does not answer: " + render(ns.error()) + "\n");
  });
  http.Get("/ready", [self, text](const httplib::Request&,
                                  httplib::Response& res) {
    auto cs = client::admin::cluster_status(self->node);
    if (!cs) {
      text(res, 503, "not ready: the node does not answer: "
                       + render(cs.error()) + "\n");
      return;
    }
    if (cs->clustered() && (cs->fenced() || cs->lease_id() == 0)) {
      text(res, 503, std::string{"not ready: no lease in etcd ("}
                       + (cs->fenced() ? "fenced" : "not joined yet")
                       + (cs->problem().empty() ? std::string{}
                                                : ": " + cs->problem())
                       + ")\n");
      return;
    }
    text(res, 200, "ready\n");
  });
  add_console_routes(http, self->node);
  http.set_error_handler([text](const httplib::Request& req,
                                httplib::Response& res) {
    if (!res.body.empty())
      return; // a route's own answer (the console's JSON errors)
    if (res.status == 404)
      text(res, 404, "no route " + req.path + "; " + routes_text + "\n");
    else
      text(res, res.status, "refused (" + std::to_string(res.status) + "); "
                              + routes_text + "\n");
  });
  int bound = port == 0 ? http.bind_to_any_port(host)
                        : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0)
    return make_error(errc::unavailable,
                      "cannot listen on " + host + ":" + std::to_string(port)
                        + " (node.admin_listen)");
  im->port = static_cast<uint16_t>(bound);
  im->thread = std::thread{[self] {
    if (!self->http.listen_after_bind())
      EDDA_WARN("admin", "the admin port " << self->port
                                          << " stopped accepting");
    self->listened = true;
  }};
  // Until it runs, http.stop() would not reach it (and a stop right after
  // the start would wait for ever).
  for (int i = 0; i < 5000 && !im->http.is_running() && !im->listened; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!im->http.is_running()) {
    im->http.stop();
    if (im->thread.joinable())
      im->thread.join();
    return make_error(errc::unavailable,
                      "the admin port " + host + ":" + std::to_string(bound)
                        + " did not start (node.admin_listen)");
  }
  return std::unique_ptr<server>{new server(std::move(im))};
}

bool admin_address(const config::node_settings& s, std::string& host,
                   uint16_t& port) {
  // Loopback for auto: the admin port has no authentication (expose it
  // with an explicit host:port, on a trusted network).
  return config::listen_address(s.admin_listen, s, "127.0.0.1", 20, host,
                                port);
}

} // namespace edda::admin
