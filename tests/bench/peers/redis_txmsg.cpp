// redis_txmsg: the txmsg workload (BENCHMARKS.md) against Redis Streams, so
// that edda can be compared with Redis in the same run (tests/bench/peers/
// redis.sh starts the server with appendfsync always and runs both).
//
// Producer: XADD <stream> * b <body>, pipelined with at most --window
// replies outstanding; a reply means the entry is in the AOF and fsync'd.
// Consumer: one member of group g reading with XREADGROUP ... >, one XACK
// per batch (sent together with the next XREADGROUP, as a pipelining client
// would). Redis runs the plain phases only. Each child opens its own
// connection after the fork.
#include "harness.hpp"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace edda::bench {
namespace {

const char* help = R"(usage: redis_txmsg [options]

The txmsg workload against a Redis server (Streams, one consumer group),
plain phases only: throughput, latency, sync (see `edda bench txmsg --help`).
Start the server with --appendonly yes --appendfsync always for a fair
comparison (tests/bench/peers/redis.sh does).

  --host H             (default 127.0.0.1)
  --port P             (default 6379)
  --count N            throughput messages (default 50000)
  --window W           max sent but unacknowledged (default 256)
  --size B             message body bytes, at least 16 (default 256)
  --latency-count N    (default 2000)     --latency-rate R  (default 1000)
  --sync-count N       (default 5000)
  --csv FILE           append one row per phase (system=redis, mode=plain)
  --disk-floor-dir DIR also measure the LMDB commit floor in DIR (removed)
)";

/// No message (consumer) or reply (producer) for this long fails the phase.
constexpr int64_t no_progress_ns = int64_t{30} * 1000000000;

struct redis_options {
  std::string host = "127.0.0.1";
  int port = 6379;
  options load;
  std::string csv;
  std::string floor_dir;
};

struct reply_deleter {
  void operator()(redisReply* r) const {
    if (r != nullptr)
      freeReplyObject(r);
  }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

struct context_deleter {
  void operator()(redisContext* c) const {
    if (c != nullptr)
      redisFree(c);
  }
};
using context_ptr = std::unique_ptr<redisContext, context_deleter>;

std::string where(const redis_options& o) {
  return o.host + ":" + std::to_string(o.port);
}

/// A blocking connection (TCP_NODELAY, as hiredis sets it); throws with a
/// readable message when the server is not there.
context_ptr connect(const redis_options& o) {
  timeval tv{5, 0};
  context_ptr c{redisConnectWithTimeout(o.host.c_str(), o.port, tv)};
  if (!c)
    throw std::runtime_error("cannot connect to redis at " + where(o)
                             + ": out of memory");
  if (c->err != 0)
    throw std::runtime_error("cannot connect to redis at " + where(o) + ": "
                             + c->errstr);
  timeval io{35, 0}; // longer than no_progress_ns: ours fires first
  redisSetTimeout(c.get(), io);
  return c;
}

std::string conn_error(redisContext* c, const std::string& what) {
  return "redis connection lost during " + what + ": "
         + (c->err != 0 ? std::string{c->errstr} : std::string{"no reply"});
}

/// Sends one command (binary-safe arguments) and waits for its reply.
reply_ptr command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  reply_ptr r{static_cast<redisReply*>(redisCommandArgv(
    c, static_cast<int>(argv.size()), argv.data(), lens.data()))};
  if (!r)
    throw std::runtime_error(conn_error(c, args.front()));
  return r;
}

std::string reply_text(const redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS
      || r->type == REDIS_REPLY_STRING)
    return std::string(r->str, r->len);
  return "unexpected reply type " + std::to_string(r->type);
}

void append(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(),
                             lens.data())
      != REDIS_OK)
    throw std::runtime_error(conn_error(c, args.front()));
}

/// Writes everything appended so far (blocking socket: until done).
void flush(redisContext* c) {
  int done = 0;
  while (done == 0)
    if (redisBufferWrite(c, &done) != REDIS_OK)
      throw std::runtime_error(conn_error(c, "write"));
}

// -- consumer -----------------------------------------------------------------

report consumer_main(const redis_options& o, const phase_spec& spec,
                     const std::function<void()>& ready) {
  auto conn = connect(o);
  auto* c = conn.get();
  const std::string& stream = spec.topic;
  // A fresh stream per phase: drop a leftover of an earlier run with the same
  // pid, then create the group (and the stream) before the producer starts.
  command(c, {"DEL", stream});
  auto g = command(c, {"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
  if (g->type == REDIS_REPLY_ERROR)
    throw std::runtime_error("XGROUP CREATE " + stream + ": " + reply_text(g.get()));
  ready();

  receipts rec(spec.n);
  samples lat;
  lat.reserve(spec.n);
  int64_t last_ack_ns = 0, last_progress = mono_ns();
  const std::vector<std::string> read_cmd{
    "XREADGROUP", "GROUP", "g", "c", "COUNT", "256", "BLOCK", "200",
    "STREAMS", stream, ">"};
  std::vector<std::string> ack{"XACK", stream, "g"};
  report r;
  bool ack_pending = false; // an XACK was sent ahead of the XREADGROUP
  append(c, read_cmd);
  for (;;) {
    if (ack_pending) {
      redisReply* raw = nullptr;
      if (redisGetReply(c, reinterpret_cast<void**>(&raw)) != REDIS_OK)
        throw std::runtime_error(conn_error(c, "XACK"));
      reply_ptr a{raw};
      last_ack_ns = mono_ns();
      if (a->type != REDIS_REPLY_INTEGER)
        throw std::runtime_error("XACK: " + reply_text(a.get()));
      ack_pending = false;
      if (rec.complete())
        break;
    }
    redisReply* raw = nullptr;
    if (redisGetReply(c, reinterpret_cast<void**>(&raw)) != REDIS_OK)
      throw std::runtime_error(conn_error(c, "XREADGROUP"));
    reply_ptr rep{raw};
    auto now = mono_ns();
    if (rep->type == REDIS_REPLY_ERROR)
      throw std::runtime_error("XREADGROUP: " + reply_text(rep.get()));
    ack.resize(3);
    // [[stream, [[id, [field, value, ...]], ...]]], or nil after BLOCK
    if (rep->type == REDIS_REPLY_ARRAY) {
      for (size_t s = 0; s < rep->elements; ++s) {
        auto* st = rep->element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements < 2
            || st->element[1]->type != REDIS_REPLY_ARRAY)
          continue;
        auto* entries = st->element[1];
        for (size_t e = 0; e < entries->elements; ++e) {
          auto* en = entries->element[e];
          if (en->type != REDIS_REPLY_ARRAY || en->elements < 1)
            continue;
          ack.emplace_back(en->element[0]->str, en->element[0]->len);
          uint64_t seq = UINT64_MAX;
          int64_t send_ns = 0;
          if (en->elements >= 2 && en->element[1]->type == REDIS_REPLY_ARRAY) {
            auto* kv = en->element[1];
            for (size_t f = 0; f + 1 < kv->elements; f += 2)
              if (std::string_view(kv->element[f]->str, kv->element[f]->len) == "b"
                  && read_body({kv->element[f + 1]->str, kv->element[f + 1]->len},
                               seq, send_ns)) {
                lat.add(now - send_ns);
                break;
              }
          }
          rec.add(seq); // UINT64_MAX (no body) counts as foreign
        }
      }
    }
    if (ack.size() > 3) {
      last_progress = now;
      append(c, ack);
      ack_pending = true;
      if (!rec.complete())
        append(c, read_cmd); // the next read rides with the XACK
      continue;
    }
    if (now - last_progress > no_progress_ns) {
      r["error"] = "no message for 30 s: received " + std::to_string(rec.received())
                   + " (" + std::to_string(rec.distinct()) + " distinct) of "
                   + std::to_string(spec.n);
      break;
    }
    append(c, read_cmd);
  }
  r["received"] = std::to_string(rec.received());
  r["distinct"] = std::to_string(rec.distinct());
  r["duplicates"] = std::to_string(rec.duplicates());
  r["foreign"] = std::to_string(rec.foreign());
  r["p50_ms"] = std::to_string(lat.percentile_ms(0.5));
  r["p99_ms"] = std::to_string(lat.percentile_ms(0.99));
  r["last_ack_ns"] = std::to_string(last_ack_ns);
  return r;
}

// -- producer -----------------------------------------------------------------

report producer_main(const redis_options& o, const phase_spec& spec,
                     const std::function<void()>& ready) {
  auto conn = connect(o);
  auto* c = conn.get();
  ready();
  std::vector<int64_t> sent_at(spec.n, 0);
  samples ack_lat;
  ack_lat.reserve(spec.n);
  uint64_t sent = 0, done = 0, acked = 0, failed = 0;
  int64_t last_ack_ns = 0;
  std::string first_error;
  std::vector<std::string> xadd{"XADD", spec.topic, "*", "b", ""};
  const auto window = std::max<uint64_t>(spec.window, 1);
  const int64_t start = mono_ns();
  const pacer pace(spec.rate, start);
  auto due = [&](uint64_t i) {
    return spec.rate <= 0
             ? start
             : start + static_cast<int64_t>(static_cast<double>(i) * 1e9 / spec.rate);
  };
  // Replies come back in order: the i-th reply answers the i-th XADD.
  auto take = [&](redisReply* raw) {
    reply_ptr rep{raw};
    auto now = mono_ns();
    if (rep->type == REDIS_REPLY_STRING) {
      ++acked;
    } else {
      ++failed;
      if (first_error.empty())
        first_error = reply_text(rep.get());
    }
    ack_lat.add(now - sent_at[done]);
    last_ack_ns = now;
    ++done;
  };
  auto drain_buffered = [&] {
    for (;;) {
      redisReply* raw = nullptr;
      if (redisGetReplyFromReader(c, reinterpret_cast<void**>(&raw)) != REDIS_OK)
        throw std::runtime_error(conn_error(c, "XADD"));
      if (raw == nullptr)
        return;
      take(raw);
    }
  };
  int64_t last_progress = mono_ns();
  while (done < spec.n) {
    // Send what is due and fits in the window, then put it on the wire.
    bool wrote = false;
    while (sent < spec.n && sent - done < window && mono_ns() >= due(sent)) {
      pace.wait(sent); // returns at once: already due
      auto t = mono_ns();
      xadd[4] = make_body(sent, t, spec.size);
      append(c, xadd);
      sent_at[sent++] = t;
      wrote = true;
      if (spec.rate > 0) // paced: every message leaves when it is due
        flush(c);
    }
    if (wrote)
      flush(c);
    // Wait for replies, or until the next send is due.
    int64_t wait_ns = no_progress_ns;
    if (sent < spec.n && sent - done < window)
      wait_ns = std::max<int64_t>(0, due(sent) - mono_ns());
    pollfd p{c->fd, POLLIN, 0};
    timespec ts{static_cast<time_t>(wait_ns / 1000000000),
                static_cast<long>(wait_ns % 1000000000)};
    int rc = ppoll(&p, 1, &ts, nullptr);
    if (rc < 0 && errno != EINTR)
      throw std::runtime_error(std::string{"poll: "} + std::strerror(errno));
    if (rc > 0) {
      if (redisBufferRead(c) != REDIS_OK)
        throw std::runtime_error(conn_error(c, "XADD"));
      auto before = done;
      drain_buffered();
      if (done > before)
        last_progress = mono_ns();
    }
    if (done < sent && mono_ns() - last_progress > no_progress_ns) {
      first_error = "no XADD reply for 30 s (" + std::to_string(sent - done)
                    + " outstanding)";
      failed += sent - done;
      break;
    }
  }
  report r;
  r["first_send_ns"] = std::to_string(spec.n > 0 ? sent_at[0] : 0);
  r["last_ack_ns"] = std::to_string(last_ack_ns);
  r["acked"] = std::to_string(acked);
  r["failed"] = std::to_string(failed);
  if (!first_error.empty())
    r["first_error"] = first_error;
  r["ack_p50_ms"] = std::to_string(ack_lat.percentile_ms(0.5));
  r["ack_p99_ms"] = std::to_string(ack_lat.percentile_ms(0.99));
  return r;
}

// -- main ---------------------------------------------------------------------

bool parse(const std::vector<std::string>& argv, redis_options& o,
           std::string& err) {
  auto need = [&](size_t& i) -> const std::string* {
    if (i + 1 >= argv.size()) {
      err = argv[i] + " needs a value";
      return nullptr;
    }
    return &argv[++i];
  };
  for (size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    const std::string* v = nullptr;
    if (auto took = parse_load_option(argv, i, o.load, err); took != 0) {
      if (took < 0)
        return false;
      continue;
    }
    if (a == "--port") {
      uint64_t x = 0;
      if (!(v = need(i)) || !parse_positive(a, *v, x, err))
        return false;
      if (x > 65535) {
        err = "--port must be 1..65535";
        return false;
      }
      o.port = static_cast<int>(x);
      continue;
    }
    if (a == "--host" || a == "--csv" || a == "--disk-floor-dir") {
      if (!(v = need(i)))
        return false;
      if (a == "--host") o.host = *v;
      else if (a == "--csv") o.csv = *v;
      else o.floor_dir = *v;
      continue;
    }
    err = "unknown option '" + a + "'";
    return false;
  }
  return true;
}

/// Before any fork: is the server there, and is it durable per message?
bool preflight(const redis_options& o) {
  try {
    auto conn = connect(o);
    auto pong = command(conn.get(), {"PING"});
    if (pong->type == REDIS_REPLY_ERROR) {
      std::cerr << "redis_txmsg: redis at " << where(o) << " answers PING with "
                << reply_text(pong.get()) << "\n";
      return false;
    }
    auto get = [&](const std::string& key) {
      auto r = command(conn.get(), {"CONFIG", "GET", key});
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        return reply_text(r->element[1]);
      return std::string{"?"};
    };
    auto aof = get("appendonly"), fsync = get("appendfsync");
    if (aof != "yes" || fsync != "always")
      std::cerr << "redis_txmsg: warning: redis at " << where(o)
                << " has appendonly " << aof << ", appendfsync " << fsync
                << ": replies do not mean fsync'd (use --appendonly yes "
                   "--appendfsync always)\n";
    return true;
  } catch (const std::exception& e) {
    std::cerr << "redis_txmsg: " << e.what() << "\n";
    return false;
  }
}

/// Drops a phase's stream so the server's memory stays flat between phases.
void drop_stream(const redis_options& o, const std::string& stream) {
  try {
    auto conn = connect(o);
    command(conn.get(), {"DEL", stream});
  } catch (const std::exception&) {
    // the phase result already says what went wrong
  }
}

} // namespace
} // namespace edda::bench

int main(int argc, char** argv) {
  using namespace edda::bench;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << help;
      return 0;
    }
  redis_options o;
  std::string err;
  if (!parse(args, o, err)) {
    std::cerr << "redis_txmsg: " << err << "\n\n" << help;
    return 2;
  }
  if (!preflight(o))
    return 1;
  auto prefix = "redis-" + std::to_string(::getpid());
  std::vector<phase_result> results;
  for (auto& spec : standard_phases(o.load, prefix, false)) {
    auto r = run_phase(
      "redis", spec,
      [&](const phase_spec& s, const std::function<void()>& ready) {
        return consumer_main(o, s, ready);
      },
      [&](const phase_spec& s, const std::function<void()>& ready) {
        return producer_main(o, s, ready);
      });
    std::cout << line(r) << "\n" << std::flush;
    results.push_back(r);
    drop_stream(o, spec.topic);
  }
  if (!o.floor_dir.empty())
    std::cout << line(measure_disk_floor(o.floor_dir)) << "\n";
  print_table(std::cout, results);
  if (!o.csv.empty())
    append_csv(o.csv, results);
  bool ok = true;
  for (auto& r : results)
    ok = ok && r.error.empty() && r.exactly_once;
  return ok ? 0 : 1;
}
