#include "base/log.hpp"

#include "base/ids.hpp"
#include "config/settings.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <unistd.h>

namespace edda::log {

namespace {

const char* names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};
const char* json_names[] = {"debug", "info", "warn", "error", "off"};

/// Every component by name, the default level and the per-component ones.
struct registry {
  std::mutex mtx;
  std::map<std::string, std::unique_ptr<component>> all;
  std::map<std::string, level> own; // log.levels
  level fallback = level::info;
  std::atomic<int> format{static_cast<int>(format_kind::text)};
  std::shared_ptr<const std::string> node = std::make_shared<std::string>();
  std::shared_ptr<spdlog::logger> out;

  registry() {
    // spdlog writes the line whole (its sink holds a mutex) and flushes it;
    // the line is formatted here (pattern %v).
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    out = std::make_shared<spdlog::logger>("edda", std::move(sink));
    out->set_pattern("%v", spdlog::pattern_time_type::utc);
    out->set_level(spdlog::level::trace);
    out->flush_on(spdlog::level::trace);
  }

  level level_of(const std::string& name) const {
    auto i = own.find(name);
    if (i != own.end())
      return i->second;
    // Operators' actions are logged unless asked otherwise by name.
    if (name == "audit" && fallback > level::info)
      return level::info;
    return fallback;
  }
};

registry& reg() {
  static registry* r = new registry; // never destroyed: logs at exit work
  return *r;
}

spdlog::level::level_enum to_spdlog(level l) {
  switch (l) {
    case level::debug:
      return spdlog::level::debug;
    case level::info:
      return spdlog::level::info;
    case level::warn:
      return spdlog::level::warn;
    case level::error:
      return spdlog::level::err;
    default:
      return spdlog::level::off;
  }
}

} // namespace

component& component_named(const char* name) {
  auto& r = reg();
  std::lock_guard<std::mutex> guard{r.mtx};
  auto& slot = r.all[name];
  if (!slot)
    slot = std::make_unique<component>(name, r.level_of(name));
  return *slot;
}

void set_level(level x) {
  auto& r = reg();
  std::lock_guard<std::mutex> guard{r.mtx};
  r.fallback = x;
  for (auto& [name, c] : r.all)
    c->set(r.level_of(name));
}

level current_level() {
  auto& r = reg();
  std::lock_guard<std::mutex> guard{r.mtx};
  return r.fallback;
}

bool set_levels(const std::string& spec, std::string& error) {
  std::map<std::string, std::string> names;
  if (!config::parse_log_levels(spec, names, error))
    return false;
  std::map<std::string, level> own;
  for (auto& [c, l] : names)
    (void) parse_level(l, own[c]);
  auto& r = reg();
  std::lock_guard<std::mutex> guard{r.mtx};
  r.own = std::move(own);
  for (auto& [name, c] : r.all)
    c->set(r.level_of(name));
  return true;
}

void set_format(format_kind f) {
  reg().format = static_cast<int>(f);
}

void set_node(const std::string& node) {
  std::atomic_store(&reg().node, std::shared_ptr<const std::string>(
                                   std::make_shared<std::string>(node)));
}

bool parse_level(const std::string& text, level& out) {
  for (int i = 0; i <= 4; ++i)
    if (text == json_names[i]) {
      out = static_cast<level>(i);
      return true;
    }
  return false;
}

namespace {

std::string timestamp(std::chrono::system_clock::time_point at) {
  auto t = std::chrono::system_clock::to_time_t(at);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              at.time_since_epoch())
              .count()
            % 1000;
  if (ms < 0) // before 1970
    ms += 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  auto n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

} // namespace

std::string format(std::chrono::system_clock::time_point at, level lvl,
                   const char* component, const std::string& msg) {
  std::string out;
  out.reserve(msg.size() + 64);
  out += timestamp(at);
  out += ' ';
  out += names[static_cast<int>(lvl)];
  out += " [";
  out += component;
  out += "] ";
  // One event, one line: a control character (a newline in a reason or
  // in an operator's name) is escaped, so no line can be forged.
  for (char ch : msg) {
    auto u = static_cast<unsigned char>(ch);
    if (u >= 0x20 && u != 0x7f) {
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", u);
      out += hex;
    }
  }
  out += '\n';
  return out;
}

std::string format_json(std::chrono::system_clock::time_point at, level lvl,
                        const std::string& component, const std::string& node,
                        const std::string& msg, const fields& f) {
  nlohmann::ordered_json j;
  j["ts"] = timestamp(at);
  j["level"] = json_names[static_cast<int>(lvl)];
  j["component"] = component;
  if (!node.empty())
    j["node"] = node;
  j["msg"] = msg;
  for (auto& [k, v] : f) {
    std::string key = k;
    if (key == "ts" || key == "level" || key == "component" || key == "node"
        || key == "msg")
      key += "_field"; // never overrides a fixed key
    j[key] = v;
  }
  // Bytes that are not UTF-8 (a key, a reason) are replaced, not refused.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void write(level lvl, const component& c, const std::string& msg,
           const fields& f) {
  auto& r = reg();
  auto now = std::chrono::system_clock::now();
  std::string line;
  if (r.format.load(std::memory_order_relaxed)
      == static_cast<int>(format_kind::json)) {
    auto node = std::atomic_load(&r.node);
    line = format_json(now, lvl, c.name(), *node, msg, f);
  } else {
    line = format(now, lvl, c.name().c_str(), msg);
  }
  line.pop_back(); // spdlog ends the line
  r.out->log(to_spdlog(lvl), spdlog::string_view_t{line.data(), line.size()});
}

void write(level lvl, const char* name, const std::string& msg) {
  write(lvl, component_named(name), msg);
}

} // namespace edda::log

namespace edda {

std::string new_unique_id() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{
    static_cast<uint64_t>(
      std::chrono::high_resolution_clock::now().time_since_epoch().count())
    ^ (static_cast<uint64_t>(::getpid()) << 32)
    ^ counter.fetch_add(0x9e3779b97f4a7c15ull)};
  // Time first (48 bits of wall-clock ms), then 80 random bits: ids made
  // close in time sort close together, so records keyed by id (half
  // messages, dedup keys) land on few B-tree pages per commit instead of
  // one page each.
  auto ms = static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count())
            & 0xffffffffffffull;
  uint64_t a = rng();
  uint64_t b = rng() ^ counter.fetch_add(1);
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%012llx%04llx%016llx",
                static_cast<unsigned long long>(ms),
                static_cast<unsigned long long>(a & 0xffff),
                static_cast<unsigned long long>(b));
  return std::string(buf, 32);
}

std::string txn_id_at(const std::string& id, uint32_t topic_id,
                      uint32_t partition) {
  return id + "@t" + std::to_string(topic_id) + "p" + std::to_string(partition);
}

bool txn_home(const std::string& txn_id, uint32_t& topic_id,
              uint32_t& partition) {
  auto at = txn_id.rfind("@t");
  if (at == std::string::npos)
    return false;
  auto p = txn_id.find('p', at + 2);
  if (p == std::string::npos || p == at + 2 || p + 1 >= txn_id.size())
    return false;
  auto digits = [](const std::string& x) {
    return !x.empty() && x.size() <= 10
           && x.find_first_not_of("0123456789") == std::string::npos;
  };
  auto t = txn_id.substr(at + 2, p - at - 2);
  auto q = txn_id.substr(p + 1);
  if (!digits(t) || !digits(q))
    return false;
  auto tv = std::stoull(t), qv = std::stoull(q);
  if (tv > 0xffffffffull || qv > 0xffffffffull)
    return false;
  topic_id = static_cast<uint32_t>(tv);
  partition = static_cast<uint32_t>(qv);
  return true;
}

bool is_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3
                                                 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > n)
      return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2)
        return false;
    i += len;
  }
  return true;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace edda
