// edda: the command line. command_line.cpp declares the commands and
// parses (`edda --help` lists them, every command has its own --help);
// here they run.
#include "base/errc.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "cli/command_line.hpp"
#include "client/admin.hpp"
#include "client/consumer.hpp"
#include "client/producer.hpp"
#include "client/transaction_producer.hpp"
#include "admin/admin_server.hpp"
#include "door/server.hpp"
#include "node/embedded_node.hpp"
#include "node/shutdown.hpp"
#include "sagas/saga.hpp"
#include "saga.hpp"
#include "txmsg.hpp"
#include <unistd.h>

#include <caf/sec.hpp>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace edda::cli {
namespace {

namespace pb = wire::v1;
using clock_type = std::chrono::steady_clock;

/// Says what failed (on stderr, "edda: ...") and returns the exit code:
/// what the node answered decides it, so that a script can tell a missing
/// thing and an unreachable node from any other failure.
int fail(const std::string& what, int code = exit_failure) {
  std::cerr << "edda: " << what << "\n";
  return code;
}

int fail(const caf::error& err) {
  if (err == caf::sec::request_timeout) // the node port did not answer
    return fail(render(err), exit_unavailable);
  switch (code_of(err)) {
    case errc::unknown_topic:
    case errc::unknown_group:
    case errc::not_found:
    case errc::unknown_txn:
    case errc::unknown_saga_type:
      return fail(render(err), exit_not_found);
    case errc::unavailable:
    case errc::shutting_down:
    case errc::partition_unavailable:
    case errc::timeout:
      return fail(render(err), exit_unavailable);
    default:
      return fail(render(err));
  }
}

/// A mistake in the command line that only running the command finds.
int usage(const std::string& what) {
  return fail(what, exit_usage);
}

/// One JSON object on a line, by nlohmann-json (strings escaped, numbers
/// as they are).
void print_json(const nlohmann::json& j) {
  std::cout << j.dump() << "\n";
}

void print_json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  (void) google::protobuf::util::MessageToJsonString(m, &out, opts);
  std::cout << out << "\n";
}

/// `ms` since the epoch as ISO 8601 UTC, to the millisecond:
/// 2026-12-08T09:30:00.123Z.
std::string iso_utc(int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

/// The connection to the node of --node (default $EDDA_NODE, else the
/// local door, or the node port with --node-port). None when it failed:
/// it said why, and `rc` is the exit code.
std::optional<client::connection> connect(const node_options& a, int& rc) {
  bool door = !a.node_port;
  std::string ep = a.node;
  if (ep.empty()) {
    const char* env = std::getenv("EDDA_NODE");
    ep = env != nullptr ? env : door ? "127.0.0.1:7430" : "127.0.0.1:7420";
  }
  std::string host;
  uint16_t port = 0;
  if (!client::parse_endpoint(ep, host, port, door ? 7430 : 7420)) {
    rc = usage(render(make_error(
      errc::invalid_argument, "--node expects HOST:PORT, got '" + ep + "'")));
    return std::nullopt;
  }
  client::connect_options o;
  o.door = door;
  o.token = a.token;
  if (o.token.empty())
    if (const char* env = std::getenv("EDDA_TOKEN"))
      o.token = env;
  auto c = client::connection::open(host, port, o);
  if (!c && door && code_of(c.error()) == errc::unavailable)
  {
    auto why = render(c.error());
    const std::string prefix = "unavailable: ";
    if (why.compare(0, prefix.size(), prefix) == 0)
      why.erase(0, prefix.size());
    // The library's hint names its option; the CLI's names its flags.
    if (auto hint = why.find("; something else listens there");
        hint != std::string::npos)
      why.erase(hint);
    rc = fail(make_error(errc::unavailable,
                         why
                           + "; --node names the node's client door "
                             "(api.listen, by default the node port + 10, "
                             "e.g. 7430); --node-port talks to the node "
                             "port instead"));
    return std::nullopt;
  }
  if (!c) {
    rc = fail(c.error());
    return std::nullopt;
  }
  return std::move(*c);
}

// -- node ---------------------------------------------------------------------

/// A node's own failures (it did not start, it stopped on one) exit 1:
/// the exit codes of what a node answers are for the commands that ask it.
int cmd_node(const node_command& a) {
  config::node_settings s;
  std::string err;
  if (!a.config.empty() && !config::load_settings_file(a.config, s, err))
    return fail(render(make_error(errc::bad_config, err)));
  std::vector<std::string> overrides = a.set;
  if (!a.data_dir.empty())
    overrides.push_back("node.data_dir=" + a.data_dir);
  if (!a.durability.empty())
    overrides.push_back("storage.durability=" + a.durability);
  if (!a.listen.empty()) {
    std::string host;
    uint16_t port = 0;
    if (!client::parse_endpoint(a.listen, host, port, 7420))
      return usage("--listen expects HOST:PORT, got '" + a.listen + "'");
    overrides.push_back("node.listen_host=" + host);
    overrides.push_back("node.listen_port=" + std::to_string(port));
  }
  // What the command line set: a mistake there is a usage error.
  for (auto& o : overrides)
    if (!config::apply_override(o, s, err))
      return usage(render(make_error(errc::bad_config, err)));
  if (a.print_config) {
    std::cout << config::render_settings(s);
    return 0;
  }
  // SIGINT / SIGTERM stop the node at every moment, from here on (a second
  // signal, or a stop longer than 10 s, ends the process at once).
  node::shutdown_signal shutdown{std::chrono::milliseconds(s.stop_grace_ms)};
  node::start_options opts;
  opts.cancel = shutdown.flag();
  // The node stopping on its own (its storage writer died) ends the process
  // with status 1, through the same stop as a signal. Its replica group
  // moved to another node by an operator (move-group): it starts again,
  // and follows the group as a standby (embedded_node::start).
  auto moved = std::make_shared<std::atomic<bool>>(false);
  opts.on_fatal = [&shutdown, moved](const caf::error& why) {
    // Once moved, what follows (the record naming the new leader) is part
    // of the same move.
    if (code_of(why) == errc::not_owner || moved->load()) {
      moved->store(true);
      shutdown.wake();
    } else {
      shutdown.request();
    }
  };
  for (;;) {
    auto node = node::embedded_node::start(s, opts);
    if (!node) {
      shutdown.stopped();
      return fail(render(node.error()));
    }
    std::cout << "edda node listening on " << s.listen_host << ":"
              << (*node)->port() << " (data dir " << s.data_dir
              << ", durability " << config::to_string(s.mode) << ")";
    if ((*node)->admin_port() != 0) { // before the door's: parsed last
      std::string admin_host;
      uint16_t ignored = 0;
      (void)edda::admin::admin_address(s, admin_host, ignored);
      std::cout << ", admin (HTTP) on " << admin_host << ":"
                << (*node)->admin_port();
    }
    if ((*node)->api_port() != 0) {
      std::string api_host;
      uint16_t ignored = 0;
      (void)door::api_address(s, api_host, ignored);
      std::cout << ", client api (gRPC) on " << api_host << ":"
                << (*node)->api_port();
    }
    std::cout << std::endl;
    shutdown.wait();
    auto failure = (*node)->failure();
    if (moved->exchange(false) && !shutdown.requested()) {
      // Stopped, within node.stop_grace as after a signal (a stop that
      // hangs must not keep the data dir open for the next start).
      std::promise<void> stopped;
      std::thread watchdog{[done = stopped.get_future(),
                            grace = s.stop_grace_ms]() mutable {
        if (done.wait_for(std::chrono::milliseconds(grace))
            != std::future_status::ready) {
          std::cerr << "edda: the node did not stop within " << grace
                    << " ms after its group moved; exiting now (storage is "
                       "crash-safe: nothing acknowledged is lost)"
                    << std::endl;
          std::_Exit(1);
        }
      }};
      (*node)->stop();
      stopped.set_value();
      watchdog.join();
      std::cout << "edda node: " << render(failure)
                << "; starting again to follow it" << std::endl;
      continue;
    }
    (*node)->stop();
    shutdown.stopped();
    if (failure)
      return fail(render(failure));
    return 0;
  }
}

// -- topic --------------------------------------------------------------------

/// "1GiB", "100 bytes".
std::string size_text(uint64_t bytes) {
  auto s = config::format_size_bytes(bytes);
  if (s.find_first_not_of("0123456789") != std::string::npos)
    return s;
  return s + (bytes == 1 ? " byte" : " bytes");
}

/// ", retention 72h and 1GiB a partition", or "" when kept for ever.
std::string retention_of(const pb::TopicMeta& m) {
  if (m.retention_ms() == 0 && m.retention_bytes() == 0)
    return {};
  std::string out = ", retention";
  if (m.retention_ms() > 0)
    out += " " + config::format_duration_ms(m.retention_ms());
  if (m.retention_bytes() > 0)
    out += std::string(m.retention_ms() > 0 ? " and" : "") + " "
           + size_text(m.retention_bytes()) + " a partition";
  return out;
}

void print_topic(const pb::TopicInfo& t) {
  std::cout << "topic " << t.meta().name() << ": " << t.meta().partitions()
            << " partitions, id " << t.meta().id() << retention_of(t.meta())
            << "\n";
  for (auto& p : t.partitions()) {
    std::cout << "  partition " << p.partition() << ": ";
    if (p.unavailable())
      std::cout << "unavailable (its home is down or unreachable)";
    else
      std::cout << "end offset " << p.end_offset() << ", "
                << p.message_count() << " messages"
                << (p.low_watermark() > 0
                      ? ", low watermark " + std::to_string(p.low_watermark())
                      : std::string{})
                << (p.bytes() > 0 ? ", " + size_text(p.bytes()) : std::string{});
    if (!p.home().empty())
      std::cout << ", home " << p.home();
    std::cout << "\n";
  }
  for (auto& g : t.groups())
    std::cout << "  group " << g.cursor() << " partition " << g.partition()
              << ": committed " << g.committed() << ", lag " << g.lag()
              << ", in flight " << g.inflight()
              << (g.member().empty() ? ", no member" : ", member " + g.member())
              << "\n";
}

int cmd_topic(const client::connection& conn, bool json,
              const std::string& verb, const topic_command& a) {
  auto partitions = static_cast<uint32_t>(a.partitions.value);
  // What alter changes, and what create sets after making the topic.
  pb::AlterTopic alter;
  alter.set_name(a.name);
  alter.set_set_retention(a.retention_ms.given);
  alter.set_retention_ms(a.retention_ms.value);
  alter.set_set_retention_bytes(a.retention_bytes.given);
  alter.set_retention_bytes(a.retention_bytes.value);
  if (verb == "create" || verb == "alter" || verb == "describe") {
    caf::expected<pb::TopicInfo> r = caf::error{};
    if (verb == "create") {
      r = client::admin::create_topic(conn, a.name, partitions);
      if (r && (a.retention_ms.given || a.retention_bytes.given))
        r = client::admin::alter_topic(conn, alter);
    } else if (verb == "alter") {
      alter.set_partitions(partitions);
      r = client::admin::alter_topic(conn, alter);
    } else {
      r = client::admin::describe_topic(conn, a.name);
    }
    if (!r)
      return fail(r.error());
    if (json)
      print_json(*r);
    else
      print_topic(*r);
    return 0;
  }
  if (verb == "list") {
    auto r = client::admin::list_topics(conn, a.all);
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    for (auto& t : r->topics())
      std::cout << t.meta().name() << "\t" << t.meta().partitions()
                << " partitions\n";
    if (r->topics().empty())
      std::cout << "(no topics)\n";
    return 0;
  }
  auto r = client::admin::delete_topic(conn, a.name); // delete
  if (!r)
    return fail(r.error());
  if (json)
    print_json(*r);
  else
    std::cout << r->what() << "\n";
  return 0;
}

// -- produce ------------------------------------------------------------------

std::string durability_of(const client::connection& conn) {
  auto status = client::admin::node_status(conn);
  return status ? status->durability() : "unknown";
}

/// Up to `window` transactions in flight (pipelined, batched on the wire):
/// half message, a local transaction that does nothing, commit.
int produce_transactional(const produce_command& a, bool json,
                          const client::connection& conn) {
  auto count = std::max<uint64_t>(a.count.value, 1);
  auto size = a.size.value, window = a.window.value;
  client::txn_producer_options o;
  o.group = a.group;
  auto p = client::transaction_producer::start(
    conn, o, [](const client::txn_check&) { return client::txn_outcome::commit; });
  if (!p)
    return fail(p.error());
  std::atomic<uint64_t> ok{0}, failed{0};
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t inflight = 0;
  caf::error first_error;
  std::string body(size, 'x');
  auto start = clock_type::now();
  for (uint64_t i = 0; i < count; ++i) {
    {
      std::unique_lock<std::mutex> guard{mtx};
      cv.wait(guard, [&] { return inflight < window; });
      ++inflight;
    }
    client::message m;
    m.topic = a.topic;
    m.body = body;
    (*p)->send_in_transaction_async(
      std::move(m),
      [](const client::message&, const std::string&) {
        return client::txn_outcome::commit;
      },
      [&](caf::expected<client::txn_result> r) {
        std::lock_guard<std::mutex> guard{mtx};
        if (r && r->ended) {
          ++ok;
        } else {
          ++failed;
          if (!first_error)
            first_error = r ? r->end_error : r.error();
        }
        --inflight;
        cv.notify_all();
      });
  }
  (*p)->flush();
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  auto mode = durability_of(conn);
  if (json)
    print_json(nlohmann::json{{"transactions", ok.load()},
                              {"failed", failed.load()},
                              {"seconds", secs},
                              {"txn_per_s", ok / secs},
                              {"durability", mode}});
  else
    std::printf("committed %llu transactional messages of %llu bytes in %.3f "
                "s: %.0f msg/s (half + commit both durable; node durability "
                "%s, window %llu)\n",
                static_cast<unsigned long long>(ok.load()),
                static_cast<unsigned long long>(size), secs, ok / secs,
                mode.c_str(), static_cast<unsigned long long>(window));
  if (failed > 0)
    return fail(std::to_string(failed.load()) + " transactions failed, first: "
                + render(first_error));
  return 0;
}

int cmd_produce(const client::connection& conn, bool json,
                const produce_command& a) {
  if (a.transactional)
    return produce_transactional(a, json, conn);
  auto count = a.count.value, size = a.size.value, window = a.window.value;
  auto delay = a.delay_ms.value;
  client::producer prod{conn};
  if (count == 0) {
    client::message m;
    m.topic = a.topic;
    m.key = a.key;
    m.tags = a.tags;
    for (auto& kv : a.props) { // KEY=VALUE (command_line.cpp checked)
      auto eq = kv.find('=');
      m.properties[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    if (delay > 0)
      m.deliver_at_ms = now_ms() + static_cast<int64_t>(delay);
    if (a.body.empty()) {
      std::string line;
      while (std::getline(std::cin, line))
        m.body += line + "\n";
    } else {
      for (size_t i = 0; i < a.body.size(); ++i)
        m.body += (i ? " " : "") + a.body[i];
    }
    auto r = prod.send(std::move(m));
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(nlohmann::json{{"id", r->id},
                                {"topic", r->topic},
                                {"partition", r->partition},
                                {"offset", r->offset},
                                {"delayed", r->delayed}});
    } else if (r->delayed) {
      std::cout << "stored " << r->id << " (delayed " << delay
                << " ms) for " << r->topic << "\n";
    } else {
      std::cout << "stored " << r->id << " at " << r->topic << "/"
                << r->partition << " offset " << r->offset << "\n";
    }
    return 0;
  }
  // Throughput mode.
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t outstanding = 0, ok = 0, failed = 0;
  caf::error first_error;
  std::string body(size, 'x');
  auto start = clock_type::now();
  for (uint64_t i = 0; i < count; ++i) {
    {
      std::unique_lock<std::mutex> guard{mtx};
      cv.wait(guard, [&] { return outstanding < window; });
      ++outstanding;
    }
    client::message m;
    m.topic = a.topic;
    m.body = body;
    m.tags = a.tags;
    if (!a.key.empty())
      m.key = a.key + std::to_string(i % 1024);
    prod.send_async(std::move(m), [&](caf::expected<client::send_result> r) {
      std::lock_guard<std::mutex> guard{mtx};
      --outstanding;
      if (r)
        ++ok;
      else {
        ++failed;
        if (!first_error)
          first_error = r.error();
      }
      cv.notify_all();
    });
  }
  prod.flush();
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  std::string mode = durability_of(conn);
  if (json) {
    print_json(nlohmann::json{{"messages", ok},
                              {"failed", failed},
                              {"bytes", size},
                              {"seconds", secs},
                              {"msg_per_s", ok / secs},
                              {"durability", mode}});
  } else {
    std::printf("produced %llu messages of %llu bytes in %.3f s: %.0f msg/s "
                "durable (node durability %s, window %llu)\n",
                static_cast<unsigned long long>(ok),
                static_cast<unsigned long long>(size), secs, ok / secs,
                mode.c_str(), static_cast<unsigned long long>(window));
  }
  if (failed > 0)
    return fail(std::to_string(failed) + " sends failed, first: "
                + render(first_error));
  return 0;
}

// -- consume ------------------------------------------------------------------

int cmd_consume(const client::connection& conn, bool json,
                const consume_command& a) {
  auto count = a.count.value, idle = a.idle_ms.value;
  auto fail_every = a.fail_every.value;
  if (idle == 0 && count > 0)
    idle = 3000;
  client::consumer_options o;
  o.group = a.group;
  o.topic = a.topic;
  o.expression = a.expr;
  o.mode = a.broadcast ? client::consume_mode::broadcast
                       : client::consume_mode::clustering;
  o.from = a.from == "latest" ? client::consume_from::latest
                              : client::consume_from::earliest;
  o.client_id = a.client_id;
  bool quiet = a.quiet;
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t seen = 0;
  auto last = clock_type::now();
  clock_type::time_point first{};
  auto c = client::consumer::start(
    conn, o, [&](const client::received& r) {
      std::lock_guard<std::mutex> guard{mtx};
      // --count N: exactly N are taken (and acknowledged); any delivered
      // beyond them are released, for the group to deliver again.
      if (count > 0 && seen >= count)
        return client::consume_result::release;
      ++seen;
      if (seen == 1)
        first = clock_type::now();
      last = clock_type::now();
      bool fail_it = fail_every > 0 && seen % fail_every == 0;
      if (!quiet) {
        if (json)
          print_json(nlohmann::json{{"id", r.msg.id},
                                    {"topic", r.msg.topic},
                                    {"partition", r.partition},
                                    {"offset", r.offset},
                                    {"reconsume_times", r.reconsume_times},
                                    {"body_bytes", r.msg.body.size()}});
        else
          std::cout << r.msg.topic << "/" << r.partition << "@" << r.offset
                    << (r.msg.tags.empty() ? "" : " [" + r.msg.tags[0] + "]")
                    << (r.reconsume_times ? " (retry "
                                              + std::to_string(r.reconsume_times)
                                              + ")"
                                          : "")
                    << ": " << r.msg.body << "\n";
        std::cout.flush();
      }
      cv.notify_all();
      return fail_it ? client::consume_result::retry_later
                     : client::consume_result::success;
    });
  if (!c)
    return fail(c.error());
  if (!quiet && !json)
    std::cerr << "consuming " << o.topic << " as " << o.group << " ("
              << (*c)->client_id() << "), Ctrl-C to stop\n";
  {
    std::unique_lock<std::mutex> guard{mtx};
    for (;;) {
      if (count > 0 && seen >= count)
        break;
      cv.wait_for(guard, std::chrono::milliseconds(100));
      if (idle > 0 && seen > 0
          && clock_type::now() - last > std::chrono::milliseconds(idle))
        break;
      if (idle > 0 && seen == 0
          && clock_type::now() - last > std::chrono::milliseconds(idle * 10))
        break;
    }
  }
  auto end = clock_type::now();
  auto counters = (*c)->counters();
  (*c)->stop();
  if (quiet) {
    auto secs = seen > 1 ? std::chrono::duration<double>(end - first).count()
                         : 0.0;
    std::printf("consumed %llu messages in %.3f s: %.0f msg/s (%llu durable "
                "ack batches)\n",
                static_cast<unsigned long long>(seen), secs,
                secs > 0 ? seen / secs : 0.0,
                static_cast<unsigned long long>(counters.acks_durable));
  }
  if (count > 0 && seen < count)
    return fail("stopped after " + std::to_string(seen) + " of "
                + std::to_string(count) + " messages (idle)");
  return 0;
}

// -- group, dlq, status -------------------------------------------------------

/// A cluster list that misses the part of nodes that did not answer says
/// so (on stderr, so that scripts reading stdout are unaffected).
template <class Names>
void warn_unreachable(const Names& nodes, const char* what) {
  if (nodes.empty())
    return;
  std::cerr << "warning: not included, the " << what << " of node(s)";
  for (auto& n : nodes)
    std::cerr << " " << n;
  std::cerr << ": down or unreachable\n";
}

/// `cursor` is group `g`'s: the group itself, or one of its broadcast
/// members' (g@client).
bool cursor_of(const std::string& cursor, const std::string& g) {
  return cursor == g || cursor.rfind(g + "@", 0) == 0;
}

int group_describe(const client::connection& conn, const std::string& name,
                   bool json) {
  auto groups = client::admin::list_groups(conn);
  if (!groups)
    return fail(groups.error());
  pb::GroupDescription out;
  bool known = false;
  for (auto& g : groups->groups())
    if (g.group() == name) {
      *out.mutable_group() = g;
      known = true;
    }
  // The lag is the topics': every topic the group has offsets on, even
  // with no member now.
  auto topics = client::admin::list_topics(conn, true);
  if (!topics)
    return fail(topics.error());
  std::vector<std::string> missing;
  for (auto& t : topics->topics()) {
    auto d = client::admin::describe_topic(conn, t.meta().name());
    if (!d) {
      missing.push_back(t.meta().name() + " (" + render(d.error()) + ")");
      continue;
    }
    pb::TopicInfo mine;
    *mine.mutable_meta() = d->meta();
    *mine.mutable_partitions() = d->partitions();
    for (auto& l : d->groups())
      if (cursor_of(l.cursor(), name))
        *mine.add_groups() = l;
    if (mine.groups_size() > 0) {
      known = true;
      *out.add_topics() = std::move(mine);
    }
  }
  if (!known) {
    for (auto& m : missing)
      std::cerr << "edda: warning: topic " << m << " not read\n";
    std::string where;
    for (auto& u : groups->unreachable())
      where += (where.empty() ? "" : ", ") + u;
    return fail(make_error(
      errc::unknown_group,
      "no group '" + name + "': it has no members and no offsets"
        + (where.empty() ? std::string{}
                         : " on the nodes that answered (not reached: " + where
                             + ")")
        + " (edda group list shows the groups)"));
  }
  out.mutable_group()->set_group(name);
  // Members as ids (a node from before member_details lists only those).
  if (out.group().member_details_size() == 0)
    for (auto& m : out.group().members())
      out.mutable_group()->add_member_details()->set_client_id(m);
  std::set<std::string> live;
  for (auto& m : out.group().member_details())
    live.insert(m.client_id());
  // A broadcast cursor (group@client) of a client that left stays with its
  // offsets; its lag is not the group's.
  auto departed = [&](const pb::GroupLag& l) {
    return l.cursor() != name
           && live.count(l.cursor().substr(name.size() + 1)) == 0;
  };
  if (json) {
    print_json(out);
  } else {
    auto& g = out.group();
    std::cout << "group " << name << ": "
              << (g.mode() == pb::BROADCAST ? "broadcast" : "clustering")
              << ", generation " << g.generation() << ", "
              << g.member_details_size() << " members\n";
    if (g.member_details_size() > 0)
      std::cout << "  MEMBER\tADDRESS\tSUBSCRIPTIONS\n";
    for (auto& m : g.member_details()) {
      std::cout << "  " << m.client_id() << "\t"
                << (m.address().empty() ? "-" : m.address()) << "\t";
      for (int i = 0; i < m.subscriptions_size(); ++i)
        std::cout << (i > 0 ? ", " : "") << m.subscriptions(i);
      std::cout << "\n";
    }
    if (out.topics_size() > 0)
      std::cout << "  TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG\tIN FLIGHT\tMEMBER\n";
    uint64_t total = 0;
    for (auto& t : out.topics())
      for (auto& l : t.groups()) {
        std::string end = "?";
        for (auto& p : t.partitions())
          if (p.partition() == l.partition())
            end = p.unavailable() ? "unavailable"
                                  : std::to_string(p.end_offset());
        bool gone = departed(l);
        std::cout << "  " << t.meta().name() << "\t" << l.partition() << "\t"
                  << l.committed() << "\t" << end << "\t" << l.lag() << "\t"
                  << l.inflight() << "\t"
                  << (l.member().empty() ? "-" : l.member())
                  << (l.cursor() != name ? " (" + l.cursor() + ")" : "")
                  << (gone ? " departed, not in the total" : "") << "\n";
        if (!gone)
          total += l.lag();
      }
    std::cout << "  total lag " << total << "\n";
  }
  for (auto& m : missing)
    std::cerr << "edda: warning: topic " << m << " not read\n";
  warn_unreachable(groups->unreachable(), "groups");
  return 0;
}

int reset_offsets(const client::connection& conn, const group_command& a,
                  bool json) {
  pb::ResetOffsets req;
  req.set_group(a.name);
  req.set_topic(a.topic);
  req.set_execute(a.execute);
  req.set_force(a.force);
  req.set_by(a.by);
  std::string to;
  if (a.to_earliest) {
    req.set_to(pb::ResetOffsets::TO_EARLIEST);
    to = "the earliest";
  } else if (a.to_latest) {
    req.set_to(pb::ResetOffsets::TO_LATEST);
    to = "the latest";
  } else if (a.to_offset.given) {
    req.set_to(pb::ResetOffsets::TO_OFFSET);
    req.set_offset(a.to_offset.value);
    to = "offset " + std::to_string(a.to_offset.value);
  } else {
    req.set_to(pb::ResetOffsets::TO_DATETIME);
    req.set_datetime_ms(a.datetime_ms);
    to = "the first message stored at or after " + iso_utc(a.datetime_ms);
  }
  auto r = client::admin::reset_offsets(conn, req);
  if (!r)
    return fail(r.error());
  int unavailable = 0;
  for (auto& row : r->partitions())
    unavailable += row.unavailable() ? 1 : 0;
  if (json) {
    print_json(*r);
  } else {
    std::cout << "group " << a.name << " on topic " << a.topic << ": to " << to
              << (r->executed() ? ", done (by " + a.by + ")"
                                : ": a dry run, nothing changed (--execute "
                                  "does it)")
              << "\n";
    std::printf("%-10s %12s %12s %12s %12s  %s\n", "partition", "committed",
                r->executed() ? "now" : "would be", "low", "end", "member");
    for (auto& row : r->partitions()) {
      if (row.unavailable()) {
        std::printf("%-10u %s\n", row.partition(),
                    ("unavailable: its home " + row.home()
                     + " is down or unreachable; left as it was")
                      .c_str());
        continue;
      }
      std::printf("%-10u %12llu %12llu %12llu %12llu  %s\n", row.partition(),
                  static_cast<unsigned long long>(row.committed()),
                  static_cast<unsigned long long>(row.target()),
                  static_cast<unsigned long long>(row.low_watermark()),
                  static_cast<unsigned long long>(row.end_offset()),
                  row.member().empty() ? "-" : row.member().c_str());
    }
  }
  if (unavailable > 0)
    return fail(std::to_string(unavailable) + " partition"
                  + (unavailable == 1 ? "" : "s")
                  + " not reached (home down): run it again once they are "
                    "back",
                exit_unavailable);
  return 0;
}

int cmd_group(const client::connection& conn, bool json,
              const std::string& verb, const group_command& a) {
  if (verb == "describe")
    return group_describe(conn, a.name, json);
  if (verb == "reset-offsets")
    return reset_offsets(conn, a, json);
  auto r = client::admin::list_groups(conn);
  if (!r)
    return fail(r.error());
  if (json) {
    print_json(*r);
    return 0;
  }
  for (auto& g : r->groups()) {
    std::cout << g.group() << "\t"
              << (g.mode() == pb::BROADCAST ? "broadcast" : "clustering")
              << "\t" << g.members_size() << " members";
    for (auto& t : g.topics())
      std::cout << "\t" << t;
    std::cout << "\n";
  }
  if (r->groups().empty())
    std::cout << "(no groups)\n";
  warn_unreachable(r->unreachable(), "groups");
  return 0;
}

// -- message ------------------------------------------------------------------

/// Bytes as text: printable ASCII as is, the rest escaped (never a
/// control character to the terminal); on one line unless `lines`.
std::string printable(const std::string& bytes, size_t max = 0,
                      bool lines = false) {
  std::string out;
  for (unsigned char c : bytes) {
    if (max > 0 && out.size() >= max) {
      out += "...";
      break;
    }
    if (c == '\\')
      out += "\\\\";
    else if ((c >= 0x20 && c < 0x7f) || (lines && (c == '\n' || c == '\t')))
      out += static_cast<char>(c);
    else if (c == '\n')
      out += "\\n";
    else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

void print_message(const pb::Message& m) {
  std::cout << "message " << m.id() << "\n"
            << "  topic       " << m.topic() << ", partition " << m.partition()
            << ", offset " << m.offset() << "\n"
            << "  stored      " << iso_utc(m.stored_ms()) << " (born "
            << iso_utc(m.born_ms()) << ")\n";
  if (!m.key().empty())
    std::cout << "  key         " << printable(m.key()) << "\n";
  if (m.tags_size() > 0) {
    std::cout << "  tags       ";
    for (auto& t : m.tags())
      std::cout << " " << printable(t);
    std::cout << "\n";
  }
  std::map<std::string, std::string> props(m.properties().begin(),
                                           m.properties().end());
  for (auto& [k, v] : props)
    std::cout << "  property    " << k << " = " << printable(v) << "\n";
  if (!m.txn_id().empty())
    std::cout << "  transaction " << m.txn_id() << " (producer group "
              << m.producer_group() << ")\n";
  if (m.reconsume_times() > 0 || !m.origin_topic().empty())
    std::cout << "  retry copy  of " << m.origin_topic() << "/"
              << m.origin_partition() << "@" << m.origin_offset()
              << ", failed deliveries " << m.reconsume_times()
              << (m.last_error().empty() ? "" : ", last error: " + m.last_error())
              << "\n";
  // Escaped (--json has the bytes as they are, in base64).
  auto body = printable(m.body(), 0, true);
  std::cout << "  body        " << size_text(m.body().size()) << "\n"
            << body << (body.empty() || body.back() == '\n' ? "" : "\n");
}

int cmd_message(const client::connection& conn, bool json,
                const std::string& verb, const message_command& a) {
  pb::FindMessages req;
  req.set_topic(a.topic);
  if (verb == "show") {
    req.set_id(a.id);
  } else {
    req.set_by_key(a.by_key);
    req.set_key(a.key);
    req.set_since_ms(a.since_ms);
    req.set_limit(static_cast<uint32_t>(a.limit.value));
    // A line each: the start of the body; --json: up to 64 KiB of it.
    req.set_max_body(json ? 64 * 1024 : 200);
  }
  auto r = client::admin::find_messages(conn, req);
  if (!r)
    return fail(r.error());
  if (json) {
    print_json(*r);
  } else if (verb == "show") {
    for (auto& m : r->messages())
      print_message(m);
  } else {
    for (auto& m : r->messages())
      std::cout << m.topic() << "/" << m.partition() << "@" << m.offset()
                << "\t" << iso_utc(m.stored_ms()) << "\t" << m.id() << "\t"
                << (m.key().empty() ? "-" : printable(m.key(), 40)) << "\t"
                << printable(m.body(), 60) << "\n";
    std::cout << r->messages_size() << " message"
              << (r->messages_size() == 1 ? "" : "s") << " (read "
              << r->scanned() << ")"
              << (r->truncated() ? "; more match: raise --limit, or narrow "
                                   "with --since"
                                 : "")
              << "\n";
  }
  if (r->unreachable_size() > 0) {
    std::string names;
    for (auto& p : r->unreachable())
      names += " " + p;
    return fail("not searched, partition(s)" + names
                  + ": their home is down or unreachable",
                exit_unavailable);
  }
  if (verb == "show" && r->messages_size() == 0) // the scan stopped first
    return fail("no message with id " + a.id + " in the " + std::to_string(r->scanned())
                  + " messages read (each partition reads a bounded number "
                    "at a time): give --topic",
                exit_not_found);
  return 0;
}

int cmd_dlq(const client::connection& conn, bool json, const std::string& verb,
            const dlq_command& a) {
  if (verb == "list") {
    auto r = client::admin::dlq_list(conn, a.group,
                                     static_cast<uint32_t>(a.limit.value));
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    for (auto& e : r->entries())
      std::cout << e.message().id() << "\t" << e.message().origin_topic()
                << "/" << e.message().origin_partition() << "@"
                << e.message().origin_offset() << "\tattempts "
                << e.message().reconsume_times() << "\t" << e.reason() << "\n";
    std::cout << r->entries_size() << " dead letters in %DLQ%" << a.group
              << "\n";
    warn_unreachable(r->unreachable(), "dead letters");
    return 0;
  }
  auto r = client::admin::dlq_redrive(conn, a.group, a.ids); // redrive
  if (!r)
    return fail(r.error());
  if (json)
    print_json(*r);
  else
    std::cout << "redrove " << r->count() << " dead letters to %RETRY%"
              << a.group << "\n";
  warn_unreachable(r->unreachable(), "dead letters (not redriven)");
  return 0;
}

std::string age(int64_t ms) {
  if (ms < 0)
    return "-" + age(-ms);
  if (ms < 10'000)
    return std::to_string(ms) + "ms";
  if (ms < 600'000)
    return std::to_string(ms / 1000) + "s";
  return std::to_string(ms / 60'000) + "m";
}

int cmd_txn(const client::connection& conn, bool json, const std::string& verb,
            const txn_command& a) {
  if (verb == "list") {
    auto r
      = client::admin::txn_list(conn, static_cast<uint32_t>(a.limit.value));
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    std::printf("%-34s %-16s %-16s %8s %6s %10s\n", "txn", "producer group",
                "topic", "age", "checks", "next check");
    int orphaned = 0;
    for (auto& t : r->records()) {
      std::printf("%-34s %-16s %-16s %8s %6u %10s%s\n", t.txn_id().c_str(),
                  t.producer_group().c_str(), t.message().topic().c_str(),
                  age(r->now_ms() - t.created_ms()).c_str(), t.checks(),
                  age(t.next_check_ms() - r->now_ms()).c_str(),
                  t.orphaned() ? "  no producer alive" : "");
      orphaned += t.orphaned() ? 1 : 0;
    }
    std::printf("%d transactions in doubt\n", r->records_size());
    if (orphaned > 0)
      std::printf("%d of them with no producer of their group alive to answer "
                  "a check-back: start one, or `edda txn resolve`\n",
                  orphaned);
    return 0;
  }
  if (verb == "show") {
    auto r = client::admin::txn_show(conn, a.id);
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    std::cout << "txn " << r->txn_id() << ": " << client::admin::txn_state_name(r->state())
              << "\n  producer group " << r->producer_group() << " (sent by "
              << r->client_id() << ")\n  topic " << r->message().topic()
              << ", message " << r->message().id() << ", "
              << r->message().body().size() << " bytes\n  check-backs "
              << r->checks() << "\n";
    if (r->orphaned())
      std::cout << "  no producer of group " << r->producer_group()
                << " is alive to answer a check-back: start one, or settle "
                   "it with `edda txn resolve`\n";
    if (r->state() != pb::TxnRecord::PREPARED)
      std::cout << "  resolved by " << r->resolved_by()
                << (r->reason().empty() ? "" : ": " + r->reason()) << "\n";
    return 0;
  }
  auto r = client::admin::txn_resolve(conn, a.id, a.outcome == "commit",
                                      a.by); // resolve
  if (!r)
    return fail(r.error());
  if (json)
    print_json(*r);
  else
    std::cout << "txn " << a.id << " "
              << (r->already() ? "was already " : "is now ")
              << client::admin::txn_state_name(r->record().state()) << " (by "
              << r->record().resolved_by() << ")\n";
  return 0;
}

int cmd_backup(const client::connection& conn, bool json,
               const backup_command& a) {
  auto r = client::admin::backup(conn, a.name, a.by, a.compact);
  if (!r)
    return fail(r.error());
  if (json) {
    print_json(*r);
    return 0;
  }
  std::cout << "backup of node " << r->node_id() << " written to "
            << r->dir() << "/data.mdb: " << r->bytes() << " bytes in "
            << r->millis() << " ms\n";
  return 0;
}

int cmd_status(const client::connection& conn, bool json) {
  auto r = client::admin::node_status(conn);
  if (!r)
    return fail(r.error());
  if (json) {
    print_json(*r);
    return 0;
  }
  std::cout << "node at " << conn.endpoint() << "\n  data dir " << r->data_dir()
            << "\n  durability " << r->durability() << "\n  map "
            << r->map_used() << " of " << r->map_size() << " bytes used\n";
  for (auto& [k, v] : r->counters())
    std::cout << "  " << k << " = " << v << "\n";
  return 0;
}

// -- cluster ------------------------------------------------------------------

std::string age_of(int64_t ms) {
  if (ms < 0)
    return "?";
  if (ms < 1000)
    return std::to_string(ms) + "ms";
  auto s = ms / 1000;
  if (s < 60)
    return std::to_string(s) + "s";
  if (s < 3600)
    return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string((s % 3600) / 60)
         + "m";
}

int cmd_cluster(const client::connection& conn, bool json,
                const std::string& verb, const cluster_command& a) {
  if (verb == "elect") {
    auto r = client::admin::elect_unclean(conn, a.node_id, a.by);
    if (!r)
      return fail(r.error());
    std::cout << "group " << r->group() << " is served by " << r->host()
              << " at epoch " << r->epoch() << " (the copy elected at seq "
              << r->elected_seq() << ", "
              << (r->unclean() ? "UNCLEAN: writes after it are lost"
                               : "in sync: nothing lost")
              << ")\n";
    return 0;
  }
  if (verb == "move-group" || verb == "add-replica") {
    auto r = verb == "move-group"
               ? client::admin::move_group(conn, a.group, a.to, a.by)
               : client::admin::add_replica(conn, a.group, a.node_id, a.by);
    if (!r)
      return fail(r.error());
    std::string isr;
    for (auto& x : r->isr())
      isr += (isr.empty() ? "" : ", ") + x;
    std::cout << "group " << r->group() << " is served by " << r->host()
              << " at epoch " << r->epoch() << "; in-sync copies: "
              << (isr.empty() ? "none" : isr) << "\n";
    return 0;
  }
  auto r = client::admin::cluster_status(conn);
  if (!r)
    return fail(r.error());
  if (json) {
    print_json(*r);
    return 0;
  }
  if (!r->clustered()) {
    std::cout << "single node " << r->node_id() << " (no cluster.etcd)\n";
    return 0;
  }
  std::cout << "cluster " << r->cluster_name() << " (etcd " << r->etcd()
            << "), seen from " << r->node_id() << "\n";
  std::cout << "  lease " << r->lease_id() << ", ttl "
            << age_of(r->lease_ttl_ms()) << ", renewed "
            << age_of(r->renewed_ms_ago()) << " ago, incarnation "
            << r->incarnation() << (r->fenced() ? ", FENCED" : "") << "\n";
  if (!r->problem().empty())
    std::cout << "  problem: " << r->problem() << "\n";
  std::cout << "  " << r->members_size() << " member"
            << (r->members_size() == 1 ? "" : "s") << ":\n";
  for (auto& m : r->members()) {
    std::cout << "    " << m.node_id() << "  " << m.endpoint()
              << "  incarnation " << m.incarnation() << "  up "
              << age_of(r->now_ms() - m.started_ms()) << "  "
              << m.partitions() << " partitions  ";
    if (!m.hosted_by().empty())
      std::cout << "(served by " << m.hosted_by() << " since a failover)  ";
    if (!m.standby_for().empty())
      std::cout << "(standby: " << m.standby_for()
                << " back, following its group to take it back)  ";
    if (m.self())
      std::cout << "(this node)";
    else if (m.connected())
      std::cout << "link up";
    else
      std::cout << "link down"
                << (m.link_error().empty() ? "" : ": " + m.link_error());
    std::cout << "\n";
  }
  if (r->replication_factor() > 1) {
    std::cout << "  replication: factor " << r->replication_factor()
              << ", min in sync " << r->min_insync() << ", leader epoch "
              << r->leader_epoch() << ", last commit " << r->leader_seq()
              << ", acknowledged up to " << r->replicated_seq() << "\n";
    std::cout << "    in sync as etcd records it: ";
    if (r->recorded_isr_size() == 0)
      std::cout << "this node only";
    for (int k = 0; k < r->recorded_isr_size(); ++k)
      std::cout << (k == 0 ? "" : ", ") << r->recorded_isr(k);
    std::cout << "\n";
    if (r->replicas_size() == 0)
      std::cout << "    no follower yet\n";
    for (auto& x : r->replicas()) {
      std::cout << "    copy on " << x.follower() << "  "
                << (x.in_sync() ? "in sync" : "OUT of sync") << "  "
                << x.state() << "  at " << x.acked_seq() << " ("
                << (r->leader_seq() > x.acked_seq()
                      ? r->leader_seq() - x.acked_seq()
                      : 0)
                << " behind, caught up " << age_of(x.caught_up_ms_ago())
                << " ago)";
      if (!x.error().empty())
        std::cout << "  last error: " << x.error();
      std::cout << "\n";
    }
  }
  if (r->groups_size() > 0) {
    std::cout << "  replica groups (etcd):\n";
    for (auto& g : r->groups()) {
      std::cout << "    " << g.group() << "  "
                << (g.host().empty() ? std::string{"served by its node"}
                    : g.host() == g.group() + "~standby"
                      ? "handed back: its node starts it"
                      : "served by " + g.host() + " since a failover")
                << "  epoch " << g.leader_epoch() << "  in sync: ";
      if (g.isr_size() == 0)
        std::cout << "no copy";
      for (int k = 0; k < g.isr_size(); ++k)
        std::cout << (k == 0 ? "" : ", ") << g.isr(k);
      std::cout << "  failover " << (g.failover() ? "auto" : "off");
      if (!g.move_to().empty())
        std::cout << "  (moving to " << g.move_to() << ")";
      else if (!g.move_wanted().empty())
        std::cout << "  (move to " << g.move_wanted() << " asked)";
      else if (g.stopped())
        std::cout << "  (its node stopped cleanly)";
      if (g.unclean())
        std::cout << "  UNCLEAN election asked by " << g.unclean_elected_by();
      if (g.pinned())
        std::cout << "  (moved by " << g.moved_by() << ": stays)";
      for (int k = 0; k < g.extra_replicas_size(); ++k)
        std::cout << (k == 0 ? "  replicas added: " : ", ")
                  << g.extra_replicas(k);
      std::cout << "\n";
    }
  }
  if (r->owners_size() > 0) {
    std::cout << "  owners (fencing token = the etcd key's create revision):\n";
    for (auto& o : r->owners())
      std::cout << "    " << o.resource() << "  " << o.node_id() << "  token "
                << o.token() << "\n";
  }
  return 0;
}

// -- saga ---------------------------------------------------------------------

void print_saga(const pb::SagaRecord& r, int64_t now) {
  std::cout << "saga " << r.id() << " (" << r.type() << "): "
            << sagas::state_name(r.state()) << (r.paused() ? " (paused)" : "")
            << ", age "
            << age(now - r.created_ms()) << "\n";
  if (!r.reason().empty())
    std::cout << "  reason: " << r.reason() << "\n";
  if (r.deadline_ms() > 0)
    std::cout << "  deadline in " << age(r.deadline_ms() - now) << "\n";
  for (auto& s : r.steps()) {
    std::cout << "  step " << s.name() << ": " << sagas::step_status_name(s.status())
              << ", " << s.attempts() << " attempt(s)";
    if (s.compensations() > 0)
      std::cout << ", " << s.compensations() << " compensation attempt(s)";
    if (s.confirms() > 0)
      std::cout << ", " << s.confirms() << " confirm attempt(s)";
    if (s.finished_ms() > 0 && s.started_ms() > 0)
      std::cout << ", took " << (s.finished_ms() - s.started_ms()) << " ms";
    if (s.waiting_since_ms() > 0 && r.state() == 1 // running
        && (s.status() == pb::SagaStep::PENDING
            || s.status() == pb::SagaStep::RUNNING))
      std::cout << ", waiting for participant '" << s.waiting_for()
                << "' to register for " << age(now - s.waiting_since_ms());
    if (!s.last_error().empty())
      std::cout << ", last error: " << s.last_error();
    std::cout << "\n";
  }
  for (auto& e : r.history())
    std::cout << "  " << age(now - e.at_ms()) << " ago: " << e.what() << "\n";
}

int cmd_saga(const client::connection& conn, bool json,
             const std::string& verb, const saga_command& a) {
  static const std::map<std::string, pb::SagaCommand::Op> ops{
    {"pause", pb::SagaCommand::PAUSE},   {"resume", pb::SagaCommand::RESUME},
    {"retry", pb::SagaCommand::RETRY},   {"skip", pb::SagaCommand::SKIP},
    {"compensate", pb::SagaCommand::COMPENSATE}};
  auto op = ops.find(verb);
  if (verb == "list") {
    pb::SagaList q;
    q.set_limit(static_cast<uint32_t>(a.limit.value));
    q.set_older_than_ms(static_cast<int64_t>(a.older_than.value) * 1000);
    q.set_type(a.type_filter);
    q.set_state(sagas::state_number(a.state)); // 0: any (run() checked it)
    auto r = client::admin::saga_list(conn, q);
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    std::printf("%-34s %-20s %-13s %8s  %s\n", "saga", "type", "state", "age",
                "reason");
    for (auto& s : r->records())
      std::printf("%-34s %-20s %-13s %8s  %s\n", s.id().c_str(),
                  s.type().c_str(), sagas::state_name(s.state()),
                  age(r->now_ms() - s.created_ms()).c_str(),
                  s.reason().c_str());
    std::printf("%d sagas\n", r->records_size());
    std::fflush(stdout);
    warn_unreachable(r->unreachable(), "sagas");
    return 0;
  }
  if (op != ops.end()) {
    auto r = client::admin::saga_command(conn, a.id, op->second, a.step, a.by);
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    print_saga(*r, now_ms());
    return 0;
  }
  if (verb == "show") {
    auto r = client::admin::saga_show(conn, a.id);
    if (!r)
      return fail(r.error());
    if (json) {
      print_json(*r);
      return 0;
    }
    print_saga(*r, now_ms());
    return 0;
  }
  auto wait_s = a.wait.value; // start
  auto r = client::admin::saga_start(conn, a.type, a.new_id, a.input,
                                     std::chrono::seconds(wait_s));
  if (!r)
    return fail(r.error());
  if (wait_s > 0) {
    if (json) {
      print_json(*r);
      return 0;
    }
    print_saga(r->record(), now_ms());
    // Ended, but not completed: the saga failed, a failure of the command.
    return r->record().state()
               == static_cast<uint32_t>(sagas::saga_state::completed)
             ? exit_ok
             : exit_failure;
  }
  if (json) {
    print_json(*r);
    return 0;
  }
  std::cout << (r->existed() ? "saga exists already: " : "started saga ")
            << r->record().id() << " (" << r->record().type() << "), "
            << sagas::state_name(r->record().state()) << "\n";
  return 0;
}

// -- bench --------------------------------------------------------------------

/// The benchmarks parse their own options (tests/bench).
int cmd_bench(const std::string& what, const std::vector<std::string>& argv) {
  if (what == "disk")
    return bench::disk_main(argv);
  char self[4096];
  auto n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    std::cerr << "edda bench: cannot find the edda binary (/proc/self/exe)\n";
    return 1;
  }
  auto exe = std::string(self, static_cast<size_t>(n));
  return what == "saga" ? bench::saga_main(argv, exe)
                        : bench::txmsg_main(argv, exe);
}

int run(const command_line& cl) {
  const auto& cmd = cl.path.front();
  auto verb = cl.path.size() > 1 ? cl.path[1] : std::string{};
  if (cmd == "node")
    return cmd_node(cl.node);
  if (cmd == "bench")
    return cmd_bench(verb, cl.bench.args);
  // What command_line.cpp cannot check (the names are the sagas library's).
  if (!cl.saga.state.empty() && sagas::state_number(cl.saga.state) == 0)
    return usage("--state takes running, compensating, completed, "
                 "compensated or failed, got '"
                 + cl.saga.state + "'");
  // Every other command talks to a node.
  int rc = 0;
  auto conn = connect(cl.conn, rc);
  if (!conn)
    return rc;
  bool json = cl.conn.json;
  if (cmd == "topic")
    return cmd_topic(*conn, json, verb, cl.topic);
  if (cmd == "produce")
    return cmd_produce(*conn, json, cl.produce);
  if (cmd == "consume")
    return cmd_consume(*conn, json, cl.consume);
  if (cmd == "group")
    return cmd_group(*conn, json, verb, cl.group);
  if (cmd == "message")
    return cmd_message(*conn, json, verb, cl.message);
  if (cmd == "dlq")
    return cmd_dlq(*conn, json, verb, cl.dlq);
  if (cmd == "status")
    return cmd_status(*conn, json);
  if (cmd == "cluster")
    return cmd_cluster(*conn, json, verb, cl.cluster);
  if (cmd == "txn")
    return cmd_txn(*conn, json, verb, cl.txn);
  if (cmd == "saga")
    return cmd_saga(*conn, json, verb, cl.saga);
  return cmd_backup(*conn, json, cl.backup); // backup
}

} // namespace
} // namespace edda::cli

int main(int argc, char** argv) {
  using namespace edda::cli;
  command_line cl;
  auto rc = parse(std::vector<std::string>(argv + 1, argv + argc), cl,
                  std::cout, std::cerr);
  return rc >= 0 ? rc : run(cl);
}
