#include "admin/console_api.hpp"

#include "base/errc.hpp"
#include "base/log.hpp"
#include "client/admin.hpp"
#include "sagas/saga.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace edda::admin {

namespace pb = edda::wire::v1;
using json = nlohmann::json;

namespace {

constexpr uint32_t list_cap = 10000; // entries read for one answer
constexpr size_t by_max = 64;        // characters of an operator's name

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

// -- answers ------------------------------------------------------------------

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Keys, bodies and tags are bytes: what is not UTF-8 is replaced, never
  // an exception.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace)
                    + "\n",
                  "application/json; charset=utf-8");
}

void fail(httplib::Response& res, int status, const std::string& why,
          json extra = json::object()) {
  extra["error"] = why;
  reply(res, status, extra);
}

/// The HTTP status for an error of the node.
int status_of(const caf::error& e) {
  switch (code_of(e)) {
    case errc::invalid_argument:
    case errc::malformed_message:
    case errc::invalid_tag_expression:
      return 400;
    case errc::not_found:
    case errc::unknown_txn:
    case errc::unknown_group:
    case errc::unknown_topic:
    case errc::unknown_saga_type:
      return 404;
    case errc::txn_conflict:
      return 409;
    case errc::timeout:
      return 504;
    case errc::unavailable:
    case errc::shutting_down:
    case errc::partition_unavailable:
      return 503;
    default:
      return 500;
  }
}

void fail(httplib::Response& res, const caf::error& e) {
  fail(res, status_of(e), render(e));
}

// -- protobuf to JSON ---------------------------------------------------------

json strings(const google::protobuf::RepeatedPtrField<std::string>& xs) {
  json out = json::array();
  for (auto& x : xs)
    out.push_back(x);
  return out;
}

using client::admin::txn_state_name;

/// The bytes of a body a page shows.
constexpr uint32_t body_preview = 512;

json message_json(const pb::Message& m) {
  json tags = json::array();
  for (auto& t : m.tags())
    tags.push_back(t);
  json props = json::object();
  for (auto& [k, v] : m.properties())
    props[k] = v;
  return {{"id", m.id()},
          {"topic", m.topic()},
          {"key", m.key()},
          {"tags", std::move(tags)},
          {"properties", std::move(props)},
          {"body", m.body().substr(0, body_preview)},
          {"body_bytes", m.body().size()},
          {"born_ms", m.born_ms()},
          {"reconsume_times", m.reconsume_times()},
          {"partition", m.partition()},
          {"offset", m.offset()},
          {"origin_topic", m.origin_topic()},
          {"origin_partition", m.origin_partition()},
          {"origin_offset", m.origin_offset()},
          {"last_error", m.last_error()}};
}

json txn_json(const pb::TxnRecord& r) {
  return {{"txn_id", r.txn_id()},
          {"state", txn_state_name(r.state())},
          {"producer_group", r.producer_group()},
          {"client_id", r.client_id()},
          {"topic", r.message().topic()},
          {"message", message_json(r.message())},
          {"checks", r.checks()},
          {"created_ms", r.created_ms()},
          {"next_check_ms", r.next_check_ms()},
          {"resolved_ms", r.resolved_ms()},
          {"resolved_by", r.resolved_by()},
          {"reason", r.reason()}};
}

json saga_json(const pb::SagaRecord& r, bool full) {
  json out = {{"id", r.id()},
              {"type", r.type()},
              {"state", sagas::state_name(r.state())},
              {"paused", r.paused()},
              {"created_ms", r.created_ms()},
              {"updated_ms", r.updated_ms()},
              {"deadline_ms", r.deadline_ms()},
              {"reason", r.reason()}};
  if (!full)
    return out;
  out["input"] = r.input();
  json steps = json::array();
  for (auto& s : r.steps())
    steps.push_back({{"name", s.name()},
                     {"status", sagas::step_status_name(s.status())},
                     {"attempts", s.attempts()},
                     {"compensations", s.compensations()},
                     {"confirms", s.confirms()},
                     {"last_error", s.last_error()},
                     {"started_ms", s.started_ms()},
                     {"finished_ms", s.finished_ms()},
                     {"waiting_for", s.waiting_for()},
                     {"waiting_since_ms", s.waiting_since_ms()}});
  out["steps"] = std::move(steps);
  json history = json::array();
  for (auto& e : r.history())
    history.push_back({{"at_ms", e.at_ms()}, {"what", e.what()}});
  out["history"] = std::move(history);
  return out;
}

// -- parameters ---------------------------------------------------------------

/// An unsigned query parameter within [lo, hi], or `def` when absent.
bool uint_param(const httplib::Request& req, const char* name, uint64_t def,
                uint64_t lo, uint64_t hi, uint64_t& out, std::string& why) {
  out = def;
  if (!req.has_param(name))
    return true;
  auto v = req.get_param_value(name);
  if (v.empty() || v.size() > 12
      || v.find_first_not_of("0123456789") != std::string::npos) {
    why = std::string{name} + " takes a number, got '" + v.substr(0, 40) + "'";
    return false;
  }
  out = std::stoull(v);
  if (out < lo || out > hi) {
    why = std::string{name} + " must be from " + std::to_string(lo) + " to "
          + std::to_string(hi) + ", got " + v;
    return false;
  }
  return true;
}

/// The JSON object of a POST body, or false with why.
bool body_object(const httplib::Request& req, json& out, std::string& why) {
  out = json::parse(req.body, nullptr, false);
  if (out.is_discarded() || !out.is_object()) {
    why = "the body must be a JSON object";
    return false;
  }
  return true;
}

/// A string field of `obj`: "" when absent; false when of another type.
bool string_field(const json& obj, const char* name, std::string& out,
                  std::string& why) {
  out.clear();
  auto i = obj.find(name);
  if (i == obj.end() || i->is_null())
    return true;
  if (!i->is_string()) {
    why = std::string{name} + " must be a string";
    return false;
  }
  out = i->get<std::string>();
  return true;
}

/// `by`: required, 1-64 printable characters.
bool by_field(const json& obj, std::string& by, std::string& why) {
  if (!string_field(obj, "by", by, why))
    return false;
  if (by.empty()) {
    why = "by is required: who does this (your name)";
    return false;
  }
  if (by.size() > by_max) {
    why = "by is longer than " + std::to_string(by_max) + " characters";
    return false;
  }
  for (unsigned char c : by)
    if (c < 0x20 || c == 0x7f) {
      why = "by has a control character";
      return false;
    }
  return true;
}

// -- audit --------------------------------------------------------------------

struct audit_log {
  std::mutex mtx;
  std::deque<json> last; ///< newest first
};

void audit(audit_log& log, const std::string& action, const std::string& target,
           const std::string& by, int status, const std::string& result) {
  EDDA_INFO_F("audit", "console: " << action << " " << target << " by " << by
                                    << ": " << status << " " << result,
              {"action", "console " + action}, {"target", target}, {"by", by},
              {"status", std::to_string(status)});
  std::lock_guard<std::mutex> guard{log.mtx};
  log.last.push_front({{"at_ms", now_ms()},
                       {"action", action},
                       {"target", target},
                       {"by", by},
                       {"status", status},
                       {"result", result}});
  constexpr size_t keep = 200;
  if (log.last.size() > keep)
    log.last.pop_back();
}

// -- routes -------------------------------------------------------------------

using handler = std::function<void(const httplib::Request&, httplib::Response&)>;

/// No exception leaves a route: one is a 500 with its text.
handler guarded(handler h) {
  return [h = std::move(h)](const httplib::Request& req,
                            httplib::Response& res) {
    try {
      h(req, res);
    } catch (const std::exception& e) {
      EDDA_WARN("admin", "console: " << req.method << " " << req.path << ": "
                                     << e.what());
      fail(res, 500, std::string{"internal error: "} + e.what());
    }
  };
}

void topics_route(const client::connection& node, httplib::Response& res) {
  auto listed = client::admin::list_topics(node, true);
  if (!listed)
    return fail(res, listed.error());
  json topics = json::array();
  json unreadable = json::array();
  for (auto& t : listed->topics()) {
    auto d = client::admin::describe_topic(node, t.meta().name());
    if (!d) {
      unreadable.push_back({{"topic", t.meta().name()},
                            {"error", render(d.error())}});
      continue;
    }
    json parts = json::array();
    for (auto& p : d->partitions())
      parts.push_back({{"partition", p.partition()},
                       {"low_watermark", p.low_watermark()},
                       {"end_offset", p.end_offset()},
                       {"messages", p.message_count()},
                       {"home", p.home()},
                       {"unavailable", p.unavailable()}});
    json groups = json::array();
    for (auto& g : d->groups())
      groups.push_back({{"cursor", g.cursor()},
                        {"partition", g.partition()},
                        {"committed", g.committed()},
                        {"lag", g.lag()},
                        {"inflight", g.inflight()},
                        {"member", g.member()}});
    topics.push_back(
      {{"name", d->meta().name()},
       {"kind", d->meta().kind() == pb::TOPIC_RETRY ? "retry" : "normal"},
       {"internal", !d->meta().name().empty() && d->meta().name()[0] == '%'},
       {"partition_count", d->meta().partitions()},
       {"created_ms", d->meta().created_ms()},
       {"partitions", std::move(parts)},
       {"groups", std::move(groups)}});
  }
  reply(res, 200, {{"topics", std::move(topics)}, {"unreadable", unreadable}});
}

void groups_route(const client::connection& node, httplib::Response& res) {
  auto groups = client::admin::list_groups(node);
  if (!groups)
    return fail(res, groups.error());
  // Lag per partition comes with the topics' descriptions.
  std::map<std::string, json> lag; // group -> rows
  if (auto listed = client::admin::list_topics(node, true)) {
    for (auto& t : listed->topics())
      if (auto d = client::admin::describe_topic(node, t.meta().name()))
        for (auto& g : d->groups()) {
          auto group = g.cursor().substr(0, g.cursor().find('@'));
          lag[group].push_back({{"topic", d->meta().name()},
                                {"cursor", g.cursor()},
                                {"partition", g.partition()},
                                {"committed", g.committed()},
                                {"lag", g.lag()},
                                {"inflight", g.inflight()},
                                {"member", g.member()}});
        }
  }
  json out = json::array();
  for (auto& g : groups->groups()) {
    json row = {{"group", g.group()},
                {"mode", g.mode() == pb::BROADCAST ? "broadcast" : "clustering"},
                {"members", strings(g.members())},
                {"topics", strings(g.topics())},
                {"generation", g.generation()}};
    auto l = lag.find(g.group());
    row["lag"] = l == lag.end() ? json::array() : l->second;
    auto d = client::admin::dlq_list(node, g.group(), list_cap, 1); // a count
    row["dlq_depth"] = d ? json(d->entries_size()) : json(nullptr);
    out.push_back(std::move(row));
  }
  reply(res, 200,
        {{"groups", std::move(out)},
         {"unreachable", strings(groups->unreachable())}});
}

void cluster_route(const client::connection& node, httplib::Response& res) {
  auto cs = client::admin::cluster_status(node);
  if (!cs)
    return fail(res, cs.error());
  json members = json::array();
  for (auto& m : cs->members())
    members.push_back({{"node_id", m.node_id()},
                       {"endpoint", m.endpoint()},
                       {"self", m.self()},
                       {"connected", m.connected()},
                       {"link_error", m.link_error()},
                       {"partitions", m.partitions()},
                       {"incarnation", m.incarnation()},
                       {"started_ms", m.started_ms()},
                       {"hosted_by", m.hosted_by()},
                       {"standby_for", m.standby_for()}});
  json homes = json::array();
  if (auto listed = client::admin::list_topics(node, true))
    for (auto& t : listed->topics())
      if (auto d = client::admin::describe_topic(node, t.meta().name()))
        for (auto& p : d->partitions())
          homes.push_back({{"topic", d->meta().name()},
                           {"partition", p.partition()},
                           {"home", p.home().empty() ? cs->node_id() : p.home()},
                           {"unavailable", p.unavailable()}});
  json groups = json::array();
  for (auto& g : cs->groups())
    groups.push_back({{"group", g.group()},
                      {"host", g.host()},
                      {"leader_epoch", g.leader_epoch()},
                      {"isr", strings(g.isr())},
                      {"unclean", g.unclean()}});
  reply(res, 200,
        {{"clustered", cs->clustered()},
         {"cluster_name", cs->cluster_name()},
         {"node_id", cs->node_id()},
         {"fenced", cs->fenced()},
         {"renewed_ms_ago", cs->renewed_ms_ago()},
         {"problem", cs->problem()},
         {"members", std::move(members)},
         {"homes", std::move(homes)},
         {"replica_groups", std::move(groups)}});
}

} // namespace

bool same_site(const httplib::Request& req) {
  auto site = req.get_header_value("Sec-Fetch-Site");
  if (site == "cross-site" || site == "same-site")
    return false;
  if (req.has_header("Origin"))
    return req.get_header_value("Origin")
           == "http://" + req.get_header_value("Host");
  return true;
}

console_post check_console_post(const httplib::Request& req,
                                httplib::Response& res) {
  if (req.method != "POST" || req.path.rfind("/api/", 0) != 0)
    return console_post::not_ours;
  auto refuse = [&](int status, const std::string& why) {
    res.status = status; // httplib closes the connection after it
    res.set_content(json{{"error", why}}.dump() + "\n",
                    "application/json; charset=utf-8");
    return console_post::refused;
  };
  if (req.has_header("Transfer-Encoding"))
    return refuse(411, "a chunked body is refused: send a Content-Length");
  if (!req.has_header("Content-Length"))
    return refuse(411, "a POST needs a Content-Length");
  auto len = req.get_header_value("Content-Length");
  if (len.empty() || len.size() > 12
      || len.find_first_not_of("0123456789") != std::string::npos)
    return refuse(400, "a Content-Length that is not a number");
  if (std::stoull(len) > console_body_limit)
    return refuse(413, "the body is larger than "
                         + std::to_string(console_body_limit) + " bytes");
  // No action from another site (CSRF): a JSON body, which a form or a
  // no-cors fetch cannot send without a preflight (refused: no CORS), and
  // no Origin but this one.
  auto type = req.get_header_value("Content-Type");
  if (type.rfind("application/json", 0) != 0)
    return refuse(415, "an action's body is JSON (Content-Type: "
                       "application/json)");
  if (!same_site(req))
    return refuse(403, "an action from another site is refused");
  return console_post::allowed;
}

void add_console_routes(httplib::Server& http, const client::connection& node) {
  auto log = std::make_shared<audit_log>();
  const client::connection* n = &node;
  auto page = [](const httplib::Request&, httplib::Response& res) {
    res.set_content(console_page(), "text/html; charset=utf-8");
  };
  http.Get("/", page);
  http.Get("/console", page);

  http.Get("/api/status", guarded([n](const httplib::Request&,
                                      httplib::Response& res) {
    auto ns = client::admin::node_status(*n);
    if (!ns)
      return fail(res, ns.error());
    json counters = json::object();
    for (auto& [k, v] : ns->counters())
      counters[k] = v;
    reply(res, 200,
          {{"node_id", ns->node_id()},
           {"listen", ns->listen()},
           {"durability", ns->durability()},
           {"map_size", ns->map_size()},
           {"map_used", ns->map_used()},
           {"counters", std::move(counters)},
           {"now_ms", now_ms()}});
  }));
  http.Get("/api/cluster",
           guarded([n](const httplib::Request&, httplib::Response& res) {
             cluster_route(*n, res);
           }));
  http.Get("/api/topics",
           guarded([n](const httplib::Request&, httplib::Response& res) {
             topics_route(*n, res);
           }));
  http.Get("/api/groups",
           guarded([n](const httplib::Request&, httplib::Response& res) {
             groups_route(*n, res);
           }));

  // -- dead letters -----------------------------------------------------------
  http.Get("/api/dlq", guarded([n](const httplib::Request& req,
                                   httplib::Response& res) {
    auto group = req.get_param_value("group");
    if (group.empty())
      return fail(res, 400, "group is required: /api/dlq?group=NAME");
    uint64_t limit = 0;
    std::string why;
    if (!uint_param(req, "limit", 1000, 1, list_cap, limit, why))
      return fail(res, 400, why);
    auto d = client::admin::dlq_list(*n, group, static_cast<uint32_t>(limit),
                                     body_preview);
    if (!d)
      return fail(res, d.error());
    json entries = json::array();
    for (auto& e : d->entries()) {
      auto m = message_json(e.message());
      if (e.body_bytes() > 0) // cut by the node to the preview
        m["body_bytes"] = e.body_bytes();
      entries.push_back({{"id", e.message().id()},
                         {"group", e.group()},
                         {"dead_ms", e.dead_ms()},
                         {"reason", e.reason()},
                         {"message", std::move(m)}});
    }
    reply(res, 200,
          {{"group", group},
           {"entries", std::move(entries)},
           {"unreachable", strings(d->unreachable())},
           {"now_ms", now_ms()}});
  }));
  http.Post("/api/dlq/redrive", guarded([n, log](const httplib::Request& req,
                                                 httplib::Response& res) {
    json body;
    std::string why, group, by;
    if (!body_object(req, body, why) || !string_field(body, "group", group, why)
        || !by_field(body, by, why))
      return fail(res, 400, why);
    if (group.empty())
      return fail(res, 400, "group is required");
    auto ids_field = body.find("ids");
    if (ids_field == body.end() || !ids_field->is_array()
        || ids_field->empty())
      return fail(res, 400, "ids is required: the dead letters to redrive");
    std::vector<std::string> ids;
    for (auto& id : *ids_field) {
      if (!id.is_string() || id.get<std::string>().empty())
        return fail(res, 400, "ids must be non-empty strings");
      ids.push_back(id.get<std::string>());
    }
    if (ids.size() > 1000)
      return fail(res, 400, "at most 1000 ids at once");
    // Those that left the DLQ since the page was read (redriven by someone
    // else): the action is refused, with what is there now.
    auto now = client::admin::dlq_list(*n, group, list_cap, 1); // ids
    if (!now)
      return fail(res, now.error());
    std::set<std::string> there;
    for (auto& e : now->entries())
      there.insert(e.message().id());
    // A DLQ longer than what one read returns cannot tell: those ids go
    // to the node, whose count says how many were there.
    bool complete = now->entries_size() < static_cast<int>(list_cap);
    json missing = json::array();
    for (auto& id : ids)
      if (complete && there.count(id) == 0)
        missing.push_back(id);
    auto target = "dlq " + group + " " + std::to_string(ids.size()) + " ids";
    if (!missing.empty()) {
      auto msg = std::to_string(missing.size())
                 + " of these dead letters are not in the DLQ of " + group
                 + " any more (redriven meanwhile?); nothing was redriven";
      audit(*log, "redrive", target, by, 409, msg);
      return fail(res, 409, msg,
                  {{"missing", missing}, {"dlq_depth", now->entries_size()}});
    }
    auto r = client::admin::dlq_redrive(*n, group, ids);
    if (!r) {
      audit(*log, "redrive", target, by, status_of(r.error()),
            render(r.error()));
      return fail(res, r.error());
    }
    audit(*log, "redrive", target, by, 200,
          "redriven " + std::to_string(r->count()));
    reply(res, 200,
          {{"redriven", r->count()},
           {"asked", ids.size()},
           {"group", group},
           {"by", by},
           {"unreachable", strings(r->unreachable())}});
  }));

  // -- transactions -----------------------------------------------------------
  http.Get("/api/txns", guarded([n](const httplib::Request& req,
                                    httplib::Response& res) {
    uint64_t limit = 0;
    std::string why;
    if (!uint_param(req, "limit", 1000, 1, list_cap, limit, why))
      return fail(res, 400, why);
    auto t = client::admin::txn_list(*n, static_cast<uint32_t>(limit));
    if (!t)
      return fail(res, t.error());
    json records = json::array();
    for (auto& r : t->records())
      records.push_back(txn_json(r));
    reply(res, 200,
          {{"records", std::move(records)},
           {"now_ms", t->now_ms() != 0 ? t->now_ms() : now_ms()}});
  }));
  http.Get(R"(/api/txns/([^/]+))", guarded([n](const httplib::Request& req,
                                               httplib::Response& res) {
    auto t = client::admin::txn_show(*n, req.matches[1]);
    if (!t)
      return fail(res, t.error());
    reply(res, 200, txn_json(*t));
  }));
  http.Post(R"(/api/txns/([^/]+)/resolve)",
            guarded([n, log](const httplib::Request& req,
                             httplib::Response& res) {
    std::string id = req.matches[1];
    json body;
    std::string why, outcome, by;
    if (!body_object(req, body, why)
        || !string_field(body, "outcome", outcome, why)
        || !by_field(body, by, why))
      return fail(res, 400, why);
    if (outcome != "commit" && outcome != "rollback")
      return fail(res, 400, "outcome must be commit or rollback, got '"
                              + outcome.substr(0, 40) + "'");
    auto target = "txn " + id;
    auto before = client::admin::txn_show(*n, id);
    if (!before)
      return fail(res, before.error());
    auto moved_on = [&](const pb::TxnRecord& now, const std::string& msg) {
      audit(*log, outcome, target, by, 409, msg);
      fail(res, 409, msg,
           {{"state", txn_state_name(now.state())}, {"txn", txn_json(now)}});
    };
    if (before->state() != pb::TxnRecord::PREPARED)
      return moved_on(*before, "txn " + id + " is no longer in doubt: "
                                 + txn_state_name(before->state()) + " by "
                                 + before->resolved_by());
    auto r = client::admin::txn_resolve(*n, id, outcome == "commit", by);
    if (!r) {
      if (code_of(r.error()) == errc::txn_conflict)
        if (auto now = client::admin::txn_show(*n, id))
          return moved_on(*now, render(r.error()));
      audit(*log, outcome, target, by, status_of(r.error()), render(r.error()));
      return fail(res, r.error());
    }
    if (r->already())
      return moved_on(r->record(), "txn " + id + " was resolved meanwhile: "
                                     + txn_state_name(r->record().state())
                                     + " by " + r->record().resolved_by());
    audit(*log, outcome, target, by, 200, txn_state_name(r->record().state()));
    reply(res, 200, txn_json(r->record()));
  }));

  // -- sagas ------------------------------------------------------------------
  http.Get("/api/sagas", guarded([n](const httplib::Request& req,
                                     httplib::Response& res) {
    pb::SagaList q;
    std::string why;
    if (req.has_param("state") && !req.get_param_value("state").empty()) {
      auto s = sagas::state_number(req.get_param_value("state"));
      if (s == 0)
        return fail(res, 400, "state takes running, compensating, completed, "
                              "compensated or failed, got '"
                                + req.get_param_value("state").substr(0, 40)
                                + "'");
      q.set_state(s);
    }
    auto type = req.get_param_value("type");
    if (type.size() > 200)
      return fail(res, 400, "type is longer than 200 characters");
    q.set_type(type);
    uint64_t older = 0, limit = 0;
    if (!uint_param(req, "older_than", 0, 0, 10ull * 365 * 86400, older, why)
        || !uint_param(req, "limit", 200, 1, list_cap, limit, why))
      return fail(res, 400, why);
    q.set_older_than_ms(static_cast<int64_t>(older) * 1000);
    q.set_limit(static_cast<uint32_t>(limit));
    auto r = client::admin::saga_list(*n, q);
    if (!r)
      return fail(res, r.error());
    json records = json::array();
    for (auto& s : r->records())
      records.push_back(saga_json(s, false));
    reply(res, 200,
          {{"records", std::move(records)},
           {"now_ms", r->now_ms() != 0 ? r->now_ms() : now_ms()},
           {"unreachable", strings(r->unreachable())}});
  }));
  http.Get(R"(/api/sagas/([^/]+))", guarded([n](const httplib::Request& req,
                                                httplib::Response& res) {
    auto s = client::admin::saga_show(*n, req.matches[1]);
    if (!s)
      return fail(res, s.error());
    auto out = saga_json(*s, true);
    out["now_ms"] = now_ms();
    reply(res, 200, out);
  }));
  http.Post(R"(/api/sagas/([^/]+)/command)",
            guarded([n, log](const httplib::Request& req,
                             httplib::Response& res) {
    static const std::map<std::string, pb::SagaCommand::Op> ops{
      {"pause", pb::SagaCommand::PAUSE},
      {"resume", pb::SagaCommand::RESUME},
      {"retry", pb::SagaCommand::RETRY},
      {"skip", pb::SagaCommand::SKIP},
      {"compensate", pb::SagaCommand::COMPENSATE}};
    std::string id = req.matches[1];
    json body;
    std::string why, command, step, by, expect;
    if (!body_object(req, body, why)
        || !string_field(body, "command", command, why)
        || !string_field(body, "step", step, why)
        || !string_field(body, "expect_state", expect, why)
        || !by_field(body, by, why))
      return fail(res, 400, why);
    auto op = ops.find(command);
    if (op == ops.end())
      return fail(res, 400, "command takes pause, resume, retry, skip or "
                            "compensate, got '"
                              + command.substr(0, 40) + "'");
    if (command == "skip" && step.empty())
      return fail(res, 400, "skip needs step: the step to take as done");
    if (command != "skip" && !step.empty())
      return fail(res, 400, "step is only for skip");
    if (!expect.empty() && sagas::state_number(expect) == 0)
      return fail(res, 400, "expect_state is not a saga state: '"
                              + expect.substr(0, 40) + "'");
    auto before = client::admin::saga_show(*n, id);
    if (!before)
      return fail(res, before.error());
    auto target = "saga " + id + (step.empty() ? "" : " step " + step);
    auto moved_on = [&](const pb::SagaRecord& now, const std::string& msg) {
      audit(*log, command, target, by, 409, msg);
      fail(res, 409, msg,
           {{"state", sagas::state_name(now.state())},
            {"saga", saga_json(now, true)}});
    };
    if (!expect.empty() && expect != sagas::state_name(before->state()))
      return moved_on(*before, "saga " + id + " is "
                                 + sagas::state_name(before->state())
                                 + " now, not " + expect
                                 + "; look at it and try again");
    if (command == "skip") {
      bool known = false;
      for (auto& s : before->steps())
        known = known || s.name() == step;
      if (!known)
        return fail(res, 400, "saga " + id + " has no step '"
                                + step.substr(0, 80) + "'");
    }
    auto r = client::admin::saga_command(*n, id, op->second, step, by);
    if (!r) {
      // The saga refuses what its state does not allow (retry of a saga
      // that is not failed, ...): it moved on, or the action never fit.
      if (code_of(r.error()) == errc::invalid_argument)
        if (auto now = client::admin::saga_show(*n, id))
          return moved_on(*now, render(r.error()));
      audit(*log, command, target, by, status_of(r.error()),
            render(r.error()));
      return fail(res, r.error());
    }
    audit(*log, command, target, by, 200, sagas::state_name(r->state()));
    auto out = saga_json(*r, true);
    out["now_ms"] = now_ms();
    reply(res, 200, out);
  }));

  http.Get("/api/audit", guarded([log](const httplib::Request&,
                                       httplib::Response& res) {
    json actions = json::array();
    {
      std::lock_guard<std::mutex> guard{log->mtx};
      for (auto& a : log->last)
        actions.push_back(a);
    }
    reply(res, 200, {{"actions", std::move(actions)}, {"now_ms", now_ms()}});
  }));

  // Anything else under /api/: a JSON 404 (the error handler answers the
  // other routes in text).
  auto unknown = [](const httplib::Request& req, httplib::Response& res) {
    fail(res, 404, "no route " + req.method + " " + req.path
                     + " (see the admin README for the console's routes)");
  };
  http.Get(R"(/api/.*)", unknown);
  http.Post(R"(/api/.*)", unknown);
}

} // namespace edda::admin
