#include "config/settings.hpp"

#include "config/toml.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <set>
#include <type_traits>
#include <utility>

namespace edda::config {

const char* to_string(durability d) {
  switch (d) {
    case durability::fsync:
      return "fsync";
    case durability::nometasync:
      return "nometasync";
    case durability::nosync:
      return "nosync";
  }
  return "unknown";
}

const group_settings& node_settings::group(const std::string& name) const {
  auto it = groups.find(name);
  return it != groups.end() ? it->second : group_defaults;
}

// -- durations and sizes -----------------------------------------------------

namespace {

struct unit {
  const char* suffix;
  uint64_t factor;
};

// Largest first, so formatting picks the biggest exact unit.
constexpr unit duration_units[]
  = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

constexpr unit size_units[] = {{"TiB", 1ull << 40},
                               {"GiB", 1ull << 30},
                               {"MiB", 1ull << 20},
                               {"KiB", 1ull << 10}};

bool parse_with_units(const std::string& text, const unit* units, size_t n,
                      uint64_t& out) {
  size_t i = 0;
  uint64_t number = 0;
  constexpr uint64_t max = std::numeric_limits<uint64_t>::max();
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (number > (max - digit) / 10)
      return false;
    number = number * 10 + digit;
    ++i;
  }
  if (i == 0)
    return false;
  std::string suffix = text.substr(i);
  uint64_t factor = 0;
  if (suffix.empty()) {
    factor = 1;
  } else {
    for (size_t u = 0; u < n; ++u)
      if (suffix == units[u].suffix)
        factor = units[u].factor;
  }
  if (factor == 0 || (number != 0 && number > max / factor))
    return false;
  out = number * factor;
  return true;
}

std::string format_with_units(uint64_t x, const unit* units, size_t n,
                              const char* zero) {
  if (x == 0)
    return zero;
  for (size_t u = 0; u < n; ++u)
    if (x % units[u].factor == 0)
      return std::to_string(x / units[u].factor) + units[u].suffix;
  return std::to_string(x);
}

} // namespace

bool parse_log_levels(const std::string& spec,
                      std::map<std::string, std::string>& out,
                      std::string& error) {
  static const std::set<std::string> levels{"debug", "info", "warn", "error",
                                            "off"};
  auto trim = [](const std::string& x) {
    auto b = x.find_first_not_of(" \t");
    auto e = x.find_last_not_of(" \t");
    return b == std::string::npos ? std::string{} : x.substr(b, e - b + 1);
  };
  std::map<std::string, std::string> got;
  size_t at = 0;
  while (at <= spec.size()) {
    auto comma = spec.find(',', at);
    auto end = comma == std::string::npos ? spec.size() : comma;
    auto item = trim(spec.substr(at, end - at));
    at = end + 1;
    if (item.empty())
      continue;
    auto eq = item.find('=');
    auto name = eq == std::string::npos ? std::string{} : trim(item.substr(0, eq));
    auto lvl = eq == std::string::npos ? std::string{} : trim(item.substr(eq + 1));
    if (name.empty() || levels.count(lvl) == 0) {
      error = "'" + item
              + "' is not COMPONENT=LEVEL (levels: debug, info, warn, error, "
                "off), e.g. saga=debug,txn=warn";
      return false;
    }
    got[name] = lvl;
  }
  out = std::move(got);
  return true;
}

bool parse_duration_ms(const std::string& text, uint64_t& out) {
  return parse_with_units(text, duration_units, std::size(duration_units), out);
}

bool parse_size_bytes(const std::string& text, uint64_t& out) {
  return parse_with_units(text, size_units, std::size(size_units), out);
}

std::string format_duration_ms(uint64_t ms) {
  return format_with_units(ms, duration_units, std::size(duration_units),
                           "0ms");
}

bool listen_address(const std::string& spec, const node_settings& s,
                    const std::string& auto_host, uint16_t offset,
                    std::string& host, uint16_t& port) {
  if (spec == "off")
    return false;
  if (spec == "auto") {
    host = auto_host;
    port = s.listen_port == 0
             ? 0
             : static_cast<uint16_t>(std::min<uint32_t>(
               static_cast<uint32_t>(s.listen_port) + offset, 65535u));
    return true;
  }
  auto colon = spec.rfind(':');
  host = spec.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  port = static_cast<uint16_t>(std::stoul(spec.substr(colon + 1)));
  return true;
}

std::string format_size_bytes(uint64_t b) {
  return format_with_units(b, size_units, std::size(size_units), "0");
}

// -- value conversion
// ----------------------------------------------------------

namespace {

using toml::kind;
using toml::value;

// Each converter returns an empty string on success, else the problem
// without location or key; callers add those.

std::string expected(const char* what, const value& v) {
  std::string got = toml::to_string(v.type);
  if (v.type == kind::string)
    got += " (" + toml::quote(v.str) + ")";
  else if (v.type == kind::integer || v.type == kind::floating
           || v.type == kind::boolean)
    got += " (" + toml::format_value(v) + ")";
  return std::string("expected ") + what + ", got " + got;
}

// "must be >= lo" when the upper bound is just the type's maximum.
std::string out_of_range(const std::string& x, const std::string& lo,
                         const std::string& hi, bool only_lower_bound) {
  if (only_lower_bound)
    return "must be >= " + lo + ", got " + x;
  return x + " is out of range " + lo + ".." + hi;
}

std::string to_uint(const value& v, uint64_t lo, uint64_t hi, uint64_t& out) {
  if (v.type != kind::integer)
    return expected("an integer", v);
  bool open_ended = hi == std::numeric_limits<uint32_t>::max()
                    || hi == std::numeric_limits<uint64_t>::max();
  bool below = v.integer < 0 || static_cast<uint64_t>(v.integer) < lo;
  if (below || static_cast<uint64_t>(v.integer) > hi)
    return out_of_range(std::to_string(v.integer), std::to_string(lo),
                        std::to_string(hi), open_ended && below);
  out = static_cast<uint64_t>(v.integer);
  return {};
}

std::string to_duration(const value& v, uint64_t& out) {
  if (v.type == kind::integer) {
    if (v.integer < 0)
      return "duration must not be negative, got " + std::to_string(v.integer);
    out = static_cast<uint64_t>(v.integer);
    return {};
  }
  if (v.type != kind::string)
    return expected("a duration such as \"5s\"", v);
  if (!parse_duration_ms(v.str, out))
    return "'" + v.str + "' is not a duration (use e.g. 250ms, 5s, 2m, 1h, 1d)";
  return {};
}

std::string to_size(const value& v, uint64_t lo, uint64_t hi, uint64_t& out) {
  uint64_t x = 0;
  if (v.type == kind::integer) {
    if (v.integer < 0)
      return "size must not be negative, got " + std::to_string(v.integer);
    x = static_cast<uint64_t>(v.integer);
  } else if (v.type != kind::string) {
    return expected("a size such as \"4MiB\"", v);
  } else if (!parse_size_bytes(v.str, x)) {
    return "'" + v.str
           + "' is not a size (use bytes or KiB, MiB, GiB, TiB, e.g. 4MiB)";
  }
  if (x < lo || x > hi)
    return out_of_range(format_size_bytes(x), format_size_bytes(lo),
                        format_size_bytes(hi),
                        x < lo && hi == std::numeric_limits<uint64_t>::max());
  out = x;
  return {};
}

std::string to_nonempty_string(const value& v, std::string& out) {
  if (v.type != kind::string)
    return expected("a string", v);
  if (v.str.empty())
    return "must not be empty";
  out = v.str;
  return {};
}

template <size_t N>
std::string to_choice(const value& v, const char* const (&options)[N],
                      std::string& out) {
  if (v.type != kind::string)
    return expected("a string", v);
  std::string all;
  for (const char* o : options) {
    if (v.str == o) {
      out = o;
      return {};
    }
    all += (all.empty() ? "" : ", ") + std::string(o);
  }
  return "'" + v.str + "' is not one of " + all;
}

std::string to_delays(const value& v, std::vector<uint64_t>& out) {
  std::vector<value> items;
  if (v.type == kind::array) {
    items = v.array;
  } else if (v.type == kind::string) {
    // "1s 5s 10s": the compact form, handy on the command line.
    size_t i = 0;
    while (i < v.str.size()) {
      size_t start = v.str.find_first_not_of(" \t", i);
      if (start == std::string::npos)
        break;
      size_t end = v.str.find_first_of(" \t", start);
      if (end == std::string::npos)
        end = v.str.size();
      items.push_back(value::of_string(v.str.substr(start, end - start)));
      i = end;
    }
  } else {
    return expected("an array of durations or a string like \"1s 5s\"", v);
  }
  if (items.empty())
    return "must not be empty";
  std::vector<uint64_t> result;
  for (const auto& item : items) {
    uint64_t ms = 0;
    if (auto err = to_duration(item, ms); !err.empty())
      return err;
    if (ms == 0)
      return "each delay must be > 0, got " + toml::format_value(item);
    result.push_back(ms);
  }
  out = std::move(result);
  return {};
}

value duration_value(uint64_t ms) {
  return value::of_string(format_duration_ms(ms));
}

value delays_value(const std::vector<uint64_t>& delays) {
  std::vector<value> items;
  for (auto ms : delays)
    items.push_back(duration_value(ms));
  return value::of_array(std::move(items));
}

/// Human form for defaults: strings unquoted, arrays space separated.
std::string display(const value& v) {
  if (v.type == kind::string)
    return v.str.empty() ? "empty" : v.str;
  if (v.type != kind::array)
    return toml::format_value(v);
  if (v.array.empty())
    return "none";
  std::string out;
  for (const auto& item : v.array)
    out += (out.empty() ? "" : " ") + display(item);
  return out;
}

// -- the declaration table
// -----------------------------------------------------

struct field {
  const char* key;
  const char* type;
  const char* bounds;
  const char* description;
  std::string (*set)(const value&, node_settings&);
  value (*get)(const node_settings&);
};

template <auto Member, uint64_t Lo, uint64_t Hi>
std::string set_uint(const value& v, node_settings& s) {
  using type = std::remove_reference_t<decltype(s.*Member)>;
  uint64_t x = 0;
  auto err = to_uint(v, Lo, Hi, x);
  if (err.empty())
    s.*Member = static_cast<type>(x);
  return err;
}

template <auto Member>
value get_uint(const node_settings& s) {
  return value::of_integer(static_cast<int64_t>(s.*Member));
}

template <auto Member>
std::string set_duration(const value& v, node_settings& s) {
  return to_duration(v, s.*Member);
}

template <auto Member>
value get_duration(const node_settings& s) {
  return duration_value(s.*Member);
}

template <auto Member, uint64_t Lo, uint64_t Hi>
std::string set_size(const value& v, node_settings& s) {
  return to_size(v, Lo, Hi, s.*Member);
}

template <auto Member>
value get_size(const node_settings& s) {
  return value::of_string(format_size_bytes(s.*Member));
}

template <auto Member>
std::string set_string(const value& v, node_settings& s) {
  return to_nonempty_string(v, s.*Member);
}

/// A string that may be empty (a file path that is optional).
template <auto Member>
std::string set_optional_string(const value& v, node_settings& s) {
  if (v.type != kind::string)
    return expected("a string", v);
  s.*Member = v.str;
  return {};
}

/// A plain name (letters, digits, '_', '-', '.'; at most 64), or empty if
/// `may_be_empty`.
template <auto Member, bool may_be_empty>
std::string set_name(const value& v, node_settings& s) {
  if (v.type != kind::string)
    return expected("a string", v);
  if (v.str.empty() && may_be_empty) {
    s.*Member = v.str;
    return {};
  }
  if (v.str.empty() || v.str.size() > 64)
    return "'" + v.str + "' must be 1-64 characters";
  for (char c : v.str)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'
          || c == '.'))
      return "'" + v.str
             + "' may only contain letters, digits, '_', '-' and '.'";
  s.*Member = v.str;
  return {};
}

/// "host:port" with a port of 1-65535; `scheme` allows an "http://" prefix.
bool is_endpoint(std::string text, bool scheme) {
  if (scheme && text.rfind("http://", 0) == 0)
    text.erase(0, 7);
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()
      || colon + 6 < text.size())
    return false;
  auto port = text.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string::npos)
    return false;
  auto n = std::stoul(port);
  return n >= 1 && n <= 65535;
}

std::string set_advertise(const value& v, node_settings& s) {
  if (v.type != kind::string)
    return expected("a string \"host:port\"", v);
  if (!v.str.empty() && !is_endpoint(v.str, false))
    return "'" + v.str + "' is not host:port";
  s.advertise = v.str;
  return {};
}

/// A string or an array of strings, as strings; else the error, saying
/// what the array (`what_array`) and each item (`what_item`) should be.
std::string string_items(const value& v, const char* what_array,
                         const char* what_item, std::vector<std::string>& out) {
  std::vector<value> items;
  if (v.type == kind::array)
    items = v.array;
  else if (v.type == kind::string)
    items.push_back(v);
  else
    return expected(what_array, v);
  for (auto& item : items) {
    if (item.type != kind::string)
      return expected(what_item, item);
    out.push_back(item.str);
  }
  return {};
}

template <std::string node_settings::*M>
std::string set_listen(const value& v, node_settings& s) {
  if (v.type != kind::string)
    return expected("a string: auto, off or \"host:port\"", v);
  if (v.str != "auto" && v.str != "off") {
    auto colon = v.str.rfind(':');
    auto port = colon == std::string::npos ? "" : v.str.substr(colon + 1);
    if (colon == std::string::npos || colon == 0 || port.empty()
        || port.size() > 5
        || port.find_first_not_of("0123456789") != std::string::npos
        || std::stoul(port) > 65535)
      return "'" + v.str + "' is not auto, off or host:port (port 0-65535)";
  }
  s.*M = v.str;
  return {};
}

/// "client:secret" each: a name for the logs, and the bearer token.
std::string set_api_tokens(const value& v, node_settings& s) {
  std::vector<std::string> items;
  if (auto err = string_items(v, "an array of \"client:secret\" strings",
                                "a string \"client:secret\"", items); !err.empty())
    return err;
  std::vector<std::string> out;
  for (auto& token : items) {
    if (token.empty() && items.size() == 1)
      break; // "" = no tokens
    auto colon = token.find(':');
    if (colon == std::string::npos || colon == 0)
      return "a token is \"client:secret\" (a client name, ':', then the "
             "secret); this one has no client name";
    auto secret = token.size() - colon - 1;
    if (secret < 16)
      return "the secret of client '" + token.substr(0, colon) + "' has "
             + std::to_string(secret) + " characters; at least 16";
    for (auto& other : out)
      if (other.substr(other.find(':') + 1) == token.substr(colon + 1))
        return "clients '" + other.substr(0, other.find(':')) + "' and '"
               + token.substr(0, colon) + "' have the same secret";
    out.push_back(token);
  }
  s.api_tokens = std::move(out);
  return {};
}

/// The client names only: secrets are never printed.
value get_api_tokens(const node_settings& s) {
  std::vector<value> items;
  for (auto& t : s.api_tokens)
    items.push_back(value::of_string(t.substr(0, t.find(':')) + ":***"));
  return value::of_array(std::move(items));
}

std::string set_etcd(const value& v, node_settings& s) {
  std::vector<std::string> items;
  if (auto err = string_items(v, "an array of \"host:port\" strings",
                                "a string \"host:port\"", items); !err.empty())
    return err;
  std::vector<std::string> out;
  for (auto& item : items) {
    // A bare string from the command line may list several, comma separated.
    size_t pos = 0;
    while (pos <= item.size()) {
      auto end = item.find(',', pos);
      if (end == std::string::npos)
        end = item.size();
      auto one = item.substr(pos, end - pos);
      pos = end + 1;
      if (one.empty() && items.size() == 1 && item.empty())
        break; // "" = no etcd
      if (!is_endpoint(one, true))
        return "'" + one + "' is not host:port (or http://host:port)";
      out.push_back(one);
    }
  }
  s.cluster_etcd = std::move(out);
  return {};
}

value get_etcd(const node_settings& s) {
  std::vector<value> items;
  for (auto& e : s.cluster_etcd)
    items.push_back(value::of_string(e));
  return value::of_array(std::move(items));
}

template <auto Member, uint64_t Lo, uint64_t Hi>
std::string set_duration_in(const value& v, node_settings& s) {
  uint64_t x = 0;
  auto err = to_duration(v, x);
  if (!err.empty())
    return err;
  if (x < Lo || x > Hi)
    return "'" + format_duration_ms(x) + "' is not within "
           + format_duration_ms(Lo) + ".." + format_duration_ms(Hi);
  s.*Member = x;
  return {};
}

template <auto Member>
value get_string(const node_settings& s) {
  return value::of_string(s.*Member);
}

// Arrays, not vectors: constant initialized, safe from static init order.
constexpr const char* durability_names[] = {"fsync", "nometasync", "nosync"};
constexpr const char* policy_names[] = {"sharing", "stealing"};
constexpr const char* level_names[] = {"debug", "info", "warn", "error"};

std::string set_durability(const value& v, node_settings& s) {
  std::string name;
  auto err = to_choice(v, durability_names, name);
  if (err.empty())
    for (size_t i = 0; i < std::size(durability_names); ++i)
      if (name == durability_names[i])
        s.mode = static_cast<durability>(i);
  return err;
}

value get_durability(const node_settings& s) {
  return value::of_string(to_string(s.mode));
}

std::string set_policy(const value& v, node_settings& s) {
  return to_choice(v, policy_names, s.scheduler_policy);
}

const char* const txn_policy_names[] = {"rollback", "commit"};

const char* const failover_names[] = {"off", "auto"};

std::string set_failover(const value& v, node_settings& s) {
  return to_choice(v, failover_names, s.failover);
}

std::string set_txn_policy(const value& v, node_settings& s) {
  return to_choice(v, txn_policy_names, s.txn_final_policy);
}

/// One string or an array of strings; each "NAME = step, step, ...".
std::string set_saga_types(const value& v, node_settings& s) {
  std::vector<std::string> items;
  if (auto err = string_items(
        v, "an array of strings like \"transfer = debit, credit\"",
        "a string like \"transfer = debit, credit\"", items);
      !err.empty())
    return err;
  std::vector<std::string> out;
  for (auto& item : items) {
    auto eq = item.find('=');
    if (eq == std::string::npos || item.find_first_not_of(" \t") == eq
        || item.find_first_not_of(" \t,", eq + 1) == std::string::npos)
      return "'" + item + "' is not NAME = STEP, STEP, ...";
    out.push_back(item);
  }
  s.saga_types = std::move(out);
  return {};
}

value get_saga_types(const node_settings& s) {
  std::vector<value> items;
  for (auto& t : s.saga_types)
    items.push_back(value::of_string(t));
  return value::of_array(std::move(items));
}

std::string set_level(const value& v, node_settings& s) {
  return to_choice(v, level_names, s.log_level);
}

constexpr const char* log_format_names[] = {"text", "json"};

std::string set_log_format(const value& v, node_settings& s) {
  return to_choice(v, log_format_names, s.log_format);
}

std::string set_log_levels(const value& v, node_settings& s) {
  if (v.type != kind::string)
    return expected("a string", v);
  std::map<std::string, std::string> levels;
  std::string error;
  if (!parse_log_levels(v.str, levels, error))
    return error;
  s.log_levels = v.str;
  return {};
}

// Shared by [consumer] and [groups."name"].
std::string set_max_reconsume(const value& v, group_settings& g) {
  uint64_t x = 0;
  auto err = to_uint(v, 0, 64, x);
  if (err.empty())
    g.max_reconsume = static_cast<uint32_t>(x);
  return err;
}

value get_max_reconsume(const group_settings& g) {
  return value::of_integer(g.max_reconsume);
}

std::string set_retry_delays(const value& v, group_settings& g) {
  return to_delays(v, g.retry_delays_ms);
}

value get_retry_delays(const group_settings& g) {
  return delays_value(g.retry_delays_ms);
}

constexpr uint64_t u32_max = std::numeric_limits<uint32_t>::max();
constexpr uint64_t u64_max = std::numeric_limits<uint64_t>::max();
using ns = node_settings;

// File order. Keep the runtime_changeable column in all_settings() in sync
// once some setting can change at runtime.
const field fields[] = {
  {"node.data_dir", "string", "non-empty",
   "LMDB environment directory, created if missing", set_string<&ns::data_dir>,
   get_string<&ns::data_dir>},
  {"node.listen_host", "string", "non-empty", "address to listen on",
   set_string<&ns::listen_host>, get_string<&ns::listen_host>},
  {"node.listen_port", "integer", "0..65535",
   "TCP port to listen on, 0 = the OS picks one",
   set_uint<&ns::listen_port, 0, 65535>, get_uint<&ns::listen_port>},
  {"node.name", "string", "empty, or 1-64 of [A-Za-z0-9_.-]",
   "this node's id in a cluster; empty = generated on the first start. The "
   "id is kept in the data dir: a different name later is refused",
   set_name<&ns::name, true>, get_string<&ns::name>},
  {"node.advertise", "string", "empty or host:port",
   "the address peers and clients use to reach this node; empty = the "
   "listen address",
   set_advertise, get_string<&ns::advertise>},
  {"node.admin_listen", "string", "auto, off or host:port",
   "the admin port (HTTP, no authentication): GET /metrics (Prometheus), "
   "/health, /ready; auto: 127.0.0.1, port node.listen_port + 20 (the OS "
   "picks one when node.listen_port is 0)",
   set_listen<&ns::admin_listen>, get_string<&ns::admin_listen>},
  {"node.stop_grace", "duration", "1s..10m",
   "after SIGINT / SIGTERM, a node not stopped by then exits at once "
   "(storage is crash-safe)",
   set_duration_in<&ns::stop_grace_ms, 1000, 600000>,
   get_duration<&ns::stop_grace_ms>},
  {"cluster.name", "string", "1-64 of [A-Za-z0-9_.-]",
   "the cluster's name: its keys live under /edda/<name>/ in etcd; a node "
   "of another cluster is refused",
   set_name<&ns::cluster_name, false>, get_string<&ns::cluster_name>},
  {"cluster.etcd", "string list", "host:port each",
   "etcd endpoints; empty = a single node that needs no etcd",
   set_etcd, get_etcd},
  {"cluster.lease_ttl", "duration", "2s..60s",
   "membership lease: a node that cannot renew it this long is taken as "
   "gone, and fences itself",
   set_duration_in<&ns::cluster_lease_ttl_ms, 2000, 60000>,
   get_duration<&ns::cluster_lease_ttl_ms>},
  {"cluster.replication_factor", "integer", "1..5",
   "copies of each node's storage, its own included: 2 or 3 keep every "
   "acknowledged write when a node is lost for good; 1 = no copies",
   set_uint<&ns::replication_factor, 1, 5>,
   get_uint<&ns::replication_factor>},
  {"cluster.min_insync", "integer", "1..5, <= replication_factor",
   "copies that must be in sync for a write to be acknowledged (every "
   "in-sync copy has it first); fewer: writes are refused as unavailable",
   set_uint<&ns::min_insync, 1, 5>, get_uint<&ns::min_insync>},
  {"cluster.replica_lag_max", "duration", "100ms..20s",
   "a copy not caught up with its node for this long leaves the in-sync "
   "set (and comes back once caught up)",
   set_duration_in<&ns::replica_lag_max_ms, 100, 20000>,
   get_duration<&ns::replica_lag_max_ms>},
  {"cluster.failover", "enum", "off, auto",
   "auto (with copies): when this node is gone (its lease expired), the "
   "in-sync copy with the most writes is elected and its node serves this "
   "node's partitions, transactions and sagas until this node is back and "
   "takes them back; off: they wait for this node",
   set_failover, get_string<&ns::failover>},
  {"storage.durability", "enum", "fsync, nometasync, nosync",
   "LMDB sync mode: fsync = safest, nosync = fastest", set_durability,
   get_durability},
  {"storage.map_size", "size", ">= 1MiB",
   "LMDB map size, the upper bound of the database size",
   set_size<&ns::map_size, (1ull << 20), u64_max>, get_size<&ns::map_size>},
  {"storage.backup_dir", "string", "a directory, or off",
   "where `edda backup NAME` writes NAME/data.mdb; empty: node.data_dir + "
   "\".backups\"; off: backups refused",
   set_optional_string<&ns::backup_dir>, get_string<&ns::backup_dir>},
  {"broker.max_message_size", "size", "1KiB..64MiB",
   "largest message accepted (body + properties + key + tags)",
   set_size<&ns::max_message_size, (1ull << 10), (64ull << 20)>,
   get_size<&ns::max_message_size>},
  {"broker.default_partitions", "integer", "1..1024",
   "partitions of a topic created without a partition count",
   set_uint<&ns::default_partitions, 1, 1024>,
   get_uint<&ns::default_partitions>},
  {"consumer.max_reconsume", "integer", "0..64",
   "redeliveries of a failed message before it is given up",
   [](const value& v, ns& s) { return set_max_reconsume(v, s.group_defaults); },
   [](const ns& s) {
     return get_max_reconsume(s.group_defaults);
   }},
  {"consumer.retry_delays", "duration list", "non-empty, each > 0",
   "delay before each redelivery",
   [](const value& v, ns& s) { return set_retry_delays(v, s.group_defaults); },
   [](const ns& s) {
     return get_retry_delays(s.group_defaults);
   }},
  {"consumer.consume_timeout", "duration", "",
   "an unacked delivery older than this counts as a failed attempt",
   set_duration<&ns::consume_timeout_ms>,
   get_duration<&ns::consume_timeout_ms>},
  {"consumer.max_inflight", "integer", ">= 1",
   "unacked messages per member per partition",
   set_uint<&ns::max_inflight, 1, u32_max>, get_uint<&ns::max_inflight>},
  {"consumer.max_span", "integer", ">= consumer.max_inflight",
   "max offsets between the lowest unacked and the next to deliver",
   set_uint<&ns::max_span, 1, u32_max>, get_uint<&ns::max_span>},
  {"consumer.offset_flush_delay", "duration", "",
   "an ack's offset write waits up to this long to share the commit of a "
   "message write (0 = commit at once); the ack is answered after the commit",
   set_duration<&ns::offset_flush_delay_ms>,
   get_duration<&ns::offset_flush_delay_ms>},
  {"consumer.rebalance_delay", "duration", "0..1m",
   "a consumer group's membership change (a member joins or leaves) waits "
   "up to this long for more before partitions are reassigned, so a burst "
   "moves them once; 0 = at once",
   set_duration_in<&ns::rebalance_delay_ms, 0, 60000>,
   get_duration<&ns::rebalance_delay_ms>},
  {"idempotency.retention", "duration", "",
   "how long processed business keys are remembered (client::idempotency)",
   set_duration<&ns::dedup_retention_ms>,
   get_duration<&ns::dedup_retention_ms>},
  {"txn.check_after", "duration", "> 0",
   "age of a half message without outcome before its first check-back",
   set_duration<&ns::txn_check_after_ms>,
   get_duration<&ns::txn_check_after_ms>},
  {"txn.max_checks", "integer", "1..1000",
   "answered check-backs (unknown or no answer) before the final policy",
   set_uint<&ns::txn_max_checks, 1, 1000>, get_uint<&ns::txn_max_checks>},
  {"txn.max_check_interval", "duration", "> 0",
   "cap of the doubling backoff between check-backs",
   set_duration<&ns::txn_max_check_interval_ms>,
   get_duration<&ns::txn_max_check_interval_ms>},
  {"txn.check_timeout", "duration", "> 0",
   "a checker that has not answered by then counts as unknown",
   set_duration<&ns::txn_check_timeout_ms>,
   get_duration<&ns::txn_check_timeout_ms>},
  {"txn.orphan_alert_after", "duration", "> 0",
   "a transaction in doubt this long while no producer of its group is "
   "alive to answer a check-back is alerted (txn_orphaned) and counted",
   set_duration<&ns::txn_orphan_alert_after_ms>,
   get_duration<&ns::txn_orphan_alert_after_ms>},
  {"txn.final_policy", "enum", "rollback, commit",
   "outcome applied (and alerted) after the last check-back", set_txn_policy,
   get_string<&ns::txn_final_policy>},
  {"txn.retention", "duration", "",
   "how long resolved outcomes are kept to answer late or repeated ends",
   set_duration<&ns::txn_retention_ms>, get_duration<&ns::txn_retention_ms>},
  {"saga.shards", "integer", "1-1024",
   "saga shards: a saga belongs to shard hash(id) % shards; changing it "
   "moves sagas between shards only at the next start",
   set_uint<&ns::saga_shards, 1, 1024>, get_uint<&ns::saga_shards>},
  {"saga.types", "string list", "NAME = STEP, STEP, ...",
   "saga types run by this node, each step served by named participants "
   "(NAME.STEP, compensation NAME.STEP.undo; +STEP runs alongside the step "
   "before, STEP~ is best effort, STEP! has no compensation, STEP>TOPIC "
   "appends the saga's input to TOPIC with the step)",
   set_saga_types, get_saga_types},
  {"saga.step_timeout", "duration", "> 0",
   "how long a step of a declared type may take per attempt",
   set_duration<&ns::saga_step_timeout_ms>,
   get_duration<&ns::saga_step_timeout_ms>},
  {"saga.step_attempts", "integer", "1-1000",
   "attempts per step of a declared type, the first included",
   set_uint<&ns::saga_step_attempts, 1, 1000>,
   get_uint<&ns::saga_step_attempts>},
  {"saga.step_backoff", "duration", "",
   "pause before the first retry of a step of a declared type (doubles, "
   "at most 10 s)",
   set_duration<&ns::saga_step_backoff_ms>,
   get_duration<&ns::saga_step_backoff_ms>},
  {"saga.participant_wait", "duration", "0..1h",
   "how long a step of a declared type waits for a participant of its name "
   "to register (a participant service being redeployed) before its "
   "attempt fails; 0 = fails at once",
   set_duration_in<&ns::saga_participant_wait_ms, 0, 3600000>,
   get_duration<&ns::saga_participant_wait_ms>},
  {"saga.retention", "duration", "",
   "how long a completed, compensated or failed saga stays listed and "
   "showable before it is purged, 0 = forever",
   set_duration<&ns::saga_retention_ms>, get_duration<&ns::saga_retention_ms>},
  {"network.heartbeat_interval", "duration", "",
   "interval between heartbeats to peers, 0 = none",
   set_duration<&ns::heartbeat_interval_ms>,
   get_duration<&ns::heartbeat_interval_ms>},
  {"network.connection_timeout", "duration",
   "> network.heartbeat_interval unless that is 0",
   "a peer silent this long is considered gone",
   set_duration<&ns::connection_timeout_ms>,
   get_duration<&ns::connection_timeout_ms>},
  {"network.tls_certificate", "string", "empty or a PEM file",
   "this node's certificate for mutual TLS on the node port (with "
   "network.tls_key and network.tls_ca; all three or none): peers without "
   "a certificate signed by network.tls_ca are refused before BASP; in a "
   "cluster every node sets them (nodes that differ are never linked)",
   set_optional_string<&ns::tls_certificate>, get_string<&ns::tls_certificate>},
  {"network.tls_key", "string", "empty or a PEM file",
   "the private key of network.tls_certificate (unencrypted)",
   set_optional_string<&ns::tls_key>, get_string<&ns::tls_key>},
  {"network.tls_ca", "string", "empty or a PEM file",
   "the CA that signs every node's certificate (keep it for edda's nodes "
   "only: any certificate it signed is a trusted peer)",
   set_optional_string<&ns::tls_ca>, get_string<&ns::tls_ca>},
  {"scheduler.policy", "enum", "sharing, stealing",
   "actor scheduler: work sharing or work stealing", set_policy,
   get_string<&ns::scheduler_policy>},
  {"scheduler.max_threads", "integer", "",
   "scheduler worker threads, 0 = number of cores",
   set_uint<&ns::max_threads, 0, u32_max>, get_uint<&ns::max_threads>},
  {"log.level", "enum", "debug, info, warn, error", "least severe level logged",
   set_level, get_string<&ns::log_level>},
  {"log.format", "enum", "text, json",
   "text lines, or one JSON object a line (ts, level, component, node, msg "
   "and fields such as saga_id, txn_id, topic, group, partition, by)",
   set_log_format, get_string<&ns::log_format>},
  {"log.levels", "string", "COMPONENT=LEVEL,...",
   "levels of single components over log.level, e.g. \"saga=debug,txn=warn\" "
   "(components: the names in brackets of each line)",
   set_log_levels, get_string<&ns::log_levels>},
  {"api.listen", "string", "auto, off or host:port",
   "the client door (gRPC, edda.api.v1) for services in any language; "
   "auto: node.listen_host, port node.listen_port + 10 (the OS picks one "
   "when node.listen_port is 0)",
   set_listen<&ns::api_listen>, get_string<&ns::api_listen>},
  {"api.tokens", "string list", "client:secret each, secret >= 16 chars",
   "bearer tokens a call must carry (authorization: Bearer SECRET); empty "
   "= no authentication; printed without their secrets",
   set_api_tokens, get_api_tokens},
  {"api.max_request_size", "size", "64KiB..256MiB",
   "largest gRPC message a client may send (checked before it is read); "
   "at least broker.max_message_size + 1MiB is used",
   set_size<&ns::api_max_request_size, (64ull << 10), (256ull << 20)>,
   get_size<&ns::api_max_request_size>},
  {"api.produce_window", "integer", "1..1000000",
   "records of one produce stream not yet acknowledged before the node "
   "stops reading it (flow control)",
   set_uint<&ns::api_produce_window, 1, 1000000>,
   get_uint<&ns::api_produce_window>},
  {"api.max_calls", "integer", "1..100000",
   "calls open at once on the door, all clients together; more are "
   "refused with RESOURCE_EXHAUSTED",
   set_uint<&ns::api_max_calls, 1, 100000>, get_uint<&ns::api_max_calls>},
  {"api.max_calls_per_address", "integer", "1..100000",
   "calls open at once from one client address",
   set_uint<&ns::api_max_calls_per_address, 1, 100000>,
   get_uint<&ns::api_max_calls_per_address>},
  {"api.handshake_timeout", "duration", "100ms..60s",
   "a connection that has not finished its HTTP/2 handshake by then is "
   "closed",
   set_duration_in<&ns::api_handshake_timeout_ms, 100, 60000>,
   get_duration<&ns::api_handshake_timeout_ms>},
  {"api.idle_timeout", "duration", "1s..24h",
   "a connection without calls this long is closed",
   set_duration_in<&ns::api_idle_timeout_ms, 1000, 86400000>,
   get_duration<&ns::api_idle_timeout_ms>},
};

struct group_field {
  const char* name; // key inside [groups."<name>"]
  const char* type;
  const char* bounds;
  const char* inherits; // shown as the default
  const char* description;
  std::string (*set)(const value&, group_settings&);
  value (*get)(const group_settings&);
};

const group_field group_fields[] = {
  {"max_reconsume", "integer", "0..64", "consumer.max_reconsume",
   "this group's consumer.max_reconsume", set_max_reconsume, get_max_reconsume},
  {"retry_delays", "duration list", "non-empty, each > 0",
   "consumer.retry_delays", "this group's consumer.retry_delays",
   set_retry_delays, get_retry_delays},
};

const char* const table_names[]
  = {"node",        "storage", "broker",    "consumer", "groups",
     "idempotency", "txn", "saga", "network", "scheduler", "log", "cluster",
     "api"};

const field* find_field(const std::string& key) {
  for (const auto& f : fields)
    if (key == f.key)
      return &f;
  return nullptr;
}

/// The group field a path like groups."name".max_reconsume names, if any.
const group_field* find_group_field(const toml::key_path& path) {
  if (path.size() != 3 || path[0] != "groups")
    return nullptr;
  for (const auto& f : group_fields)
    if (path[2] == f.name)
      return &f;
  return nullptr;
}

bool is_table_name(const std::string& name) {
  return std::find_if(std::begin(table_names), std::end(table_names),
                      [&](const char* t) { return name == t; })
         != std::end(table_names);
}

std::string table_of(const std::string& key) {
  return key.substr(0, key.find('.'));
}

std::string last_part(const std::string& key) {
  auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min(
        {row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// " (did you mean 'x'?)" for the closest candidate, or "".
std::string did_you_mean(const toml::key_path& path,
                         const std::vector<std::string>& candidates) {
  std::string key = toml::format_key(path);
  std::string last = path.empty() ? key : path.back();
  size_t best = std::numeric_limits<size_t>::max();
  std::string best_key;
  for (const auto& c : candidates) {
    // Whole key catches typos; the last part alone catches a key put in
    // the wrong table or at top level.
    size_t whole = edit_distance(key, c);
    size_t tail = edit_distance(last, last_part(c));
    bool close = whole <= std::max<size_t>(2, key.size() / 4)
                 || tail <= std::max<size_t>(1, last.size() / 4);
    size_t score = std::min(whole, tail + 1);
    if (close && score < best) {
      best = score;
      best_key = c;
    }
  }
  return best_key.empty() ? "" : " (did you mean '" + best_key + "'?)";
}

std::string unknown_key(const toml::key_path& path) {
  std::vector<std::string> candidates;
  for (const auto& f : fields)
    candidates.emplace_back(f.key);
  if (path.size() >= 2 && path[0] == "groups")
    for (const auto& f : group_fields)
      candidates.push_back(toml::format_key({"groups", path[1], f.name}));
  return "unknown key '" + toml::format_key(path) + "'"
         + did_you_mean(path, candidates);
}

std::string unknown_table(const toml::key_path& path) {
  std::vector<std::string> candidates(std::begin(table_names),
                                      std::end(table_names));
  return "unknown table '" + toml::format_key(path) + "'"
         + did_you_mean(path, candidates);
}

/// Where a key or table starts in a file (line 0: the command line).
struct position {
  int line = 0;
  int column = 0;
  bool operator<(const position& o) const {
    return line != o.line ? line < o.line : column < o.column;
  }
};

/// Validation state of one parse or override.
class applier {
public:
  applier(node_settings base, std::function<std::string(position)> where)
      : s_(std::move(base)), where_(std::move(where)) {}

  /// Empty on success, else the full error line.
  [[nodiscard]] std::string table(const toml::key_path& path, position line) {
    // An inline table, or a table header, where a setting takes a value.
    if (find_field(toml::format_key(path)) != nullptr
        || find_group_field(path) != nullptr)
      return where_(line) + toml::format_key(path)
             + ": expected a value, got a table";
    if (path[0] != "groups") {
      bool known = path.size() == 1 && is_table_name(path[0]);
      return known ? "" : where_(line) + unknown_table(path);
    }
    if (path.size() == 1)
      return {};
    if (path.size() > 2)
      return where_(line) + unknown_table(path);
    if (path[1].empty())
      return where_(line) + "group name must not be empty";
    pending_groups_[path[1]];
    return {};
  }

  [[nodiscard]] std::string set(const toml::key_path& path, const value& v,
                                position line) {
    std::string key = toml::format_key(path);
    if (const auto* f = find_field(key)) {
      lines_[key] = line;
      auto err = f->set(v, s_);
      return err.empty() ? "" : where_(line) + key + ": " + err;
    }
    if (const auto* f = find_group_field(path)) {
      if (path[1].empty())
        return where_(line) + "group name must not be empty";
      // Validate now, against a scratch copy, to report the right line.
      group_settings scratch;
      auto err = f->set(v, scratch);
      if (!err.empty())
        return where_(line) + key + ": " + err;
      pending_groups_[path[1]].emplace_back(f, v);
      return {};
    }
    if (path.size() == 1 && is_table_name(path[0]))
      return where_(line) + "'" + path[0] + "' is a table: write [" + path[0]
             + "] and its keys below it";
    return where_(line) + unknown_key(path);
  }

  /// Builds the groups and checks rules spanning several keys.
  [[nodiscard]] std::string finish() {
    for (auto& [name, overrides] : pending_groups_) {
      auto it = s_.groups.find(name);
      group_settings g = it != s_.groups.end() ? it->second : s_.group_defaults;
      for (const auto& [f, v] : overrides)
        (void)f->set(v, g); // validated in set()
      s_.groups[name] = std::move(g);
    }
    pending_groups_.clear();
    if (s_.max_span < s_.max_inflight) {
      if (blame("consumer.max_span", "consumer.max_inflight"))
        return where_(line_of("consumer.max_span"))
               + "consumer.max_span: " + std::to_string(s_.max_span)
               + " must be >= consumer.max_inflight ("
               + std::to_string(s_.max_inflight) + ")";
      return where_(line_of("consumer.max_inflight"))
             + "consumer.max_inflight: " + std::to_string(s_.max_inflight)
             + " must be <= consumer.max_span (" + std::to_string(s_.max_span)
             + ")";
    }
    if (s_.min_insync > s_.replication_factor) {
      auto m = std::to_string(s_.min_insync);
      auto rf = std::to_string(s_.replication_factor);
      if (blame("cluster.min_insync", "cluster.replication_factor"))
        return where_(line_of("cluster.min_insync")) + "cluster.min_insync: "
               + m + " must be <= cluster.replication_factor (" + rf + ")";
      return where_(line_of("cluster.replication_factor"))
             + "cluster.replication_factor: " + rf
             + " must be >= cluster.min_insync (" + m + ")";
    }
    if (s_.replication_factor > 1 && s_.cluster_etcd.empty())
      return where_(line_of("cluster.replication_factor"))
             + "cluster.replication_factor: "
             + std::to_string(s_.replication_factor)
             + " needs a cluster (cluster.etcd): a single node has no "
               "other node to keep copies";
    if (s_.heartbeat_interval_ms != 0
        && s_.connection_timeout_ms <= s_.heartbeat_interval_ms) {
      auto timeout = format_duration_ms(s_.connection_timeout_ms);
      auto heartbeat = format_duration_ms(s_.heartbeat_interval_ms);
      if (blame("network.connection_timeout", "network.heartbeat_interval"))
        return where_(line_of("network.connection_timeout"))
               + "network.connection_timeout: " + timeout
               + " must be > network.heartbeat_interval (" + heartbeat + ")";
      return where_(line_of("network.heartbeat_interval"))
             + "network.heartbeat_interval: " + heartbeat
             + " must be < network.connection_timeout (" + timeout + ")";
    }
    return {};
  }

  [[nodiscard]] node_settings& result() {
    return s_;
  }

private:
  position line_of(const std::string& key) const {
    auto it = lines_.find(key);
    return it == lines_.end() ? position{} : it->second;
  }

  // The key a cross-key rule lives on is blamed unless only the other one
  // was set here.
  bool blame(const std::string& key, const std::string& other) const {
    return lines_.count(key) > 0 || lines_.count(other) == 0;
  }

  node_settings s_;
  std::function<std::string(position)> where_;
  std::map<std::string, position> lines_;
  std::map<std::string, std::vector<std::pair<const group_field*, value>>>
    pending_groups_;
};

} // namespace

const std::vector<setting_info>& all_settings() {
  static const std::vector<setting_info> table = [] {
    std::vector<setting_info> out;
    node_settings defaults;
    for (const auto& f : fields)
      out.push_back({f.key, f.type, display(f.get(defaults)), f.description,
                     f.bounds, false});
    for (const auto& f : group_fields)
      out.push_back({std::string("groups.<name>.") + f.name, f.type, f.inherits,
                     f.description, f.bounds, false});
    return out;
  }();
  return table;
}

bool parse_settings(const std::string& text, const std::string& source_name,
                    node_settings& out, std::string& error) {
  toml::document doc;
  if (!toml::parse(text, source_name, doc, error))
    return false;
  applier a{out, [&](position at) {
              return at.line > 0 ? source_name + ":" + std::to_string(at.line)
                                     + ":" + std::to_string(at.column) + ": "
                                 : source_name + ": ";
            }};
  // Headers and entries in document order, so the first error is reported.
  size_t t = 0;
  size_t e = 0;
  while (t < doc.tables.size() || e < doc.entries.size()) {
    std::string err;
    if (e == doc.entries.size()
        || (t < doc.tables.size()
            && position{doc.tables[t].line, doc.tables[t].column}
                 < position{doc.entries[e].line, doc.entries[e].column})) {
      const auto& tb = doc.tables[t];
      err = a.table(tb.path, {tb.line, tb.column});
      ++t;
    } else {
      const auto& en = doc.entries[e];
      err = a.set(en.path, en.val, {en.line, en.column});
      ++e;
    }
    if (!err.empty()) {
      error = std::move(err);
      return false;
    }
  }
  if (auto err = a.finish(); !err.empty()) {
    error = std::move(err);
    return false;
  }
  out = std::move(a.result());
  return true;
}

bool load_settings_file(const std::string& path, node_settings& out,
                        std::string& error) {
  // stdio rather than iostreams: it reliably leaves errno set.
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    error = "cannot read '" + path + "': " + std::strerror(errno);
    return false;
  }
  std::string text;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
    text.append(buf, n);
  bool failed = std::ferror(f) != 0;
  int err = errno;
  std::fclose(f);
  if (failed) {
    error = "cannot read '" + path + "': " + std::strerror(err);
    return false;
  }
  return parse_settings(text, path, out, error);
}

bool apply_override(const std::string& key_eq_value, node_settings& out,
                    std::string& error) {
  const std::string where = "command line: ";
  toml::key_path path;
  std::string raw;
  std::string err;
  if (!toml::parse_assignment(key_eq_value, path, raw, err)) {
    error = where + err + " in '" + key_eq_value + "' (use key=value)";
    return false;
  }
  std::string key = toml::format_key(path);
  const field* f = find_field(key);
  const group_field* gf = find_group_field(path);
  if (f == nullptr && gf == nullptr) {
    error = where + unknown_key(path);
    return false;
  }
  if (raw.empty()) {
    error = where + key + ": missing value";
    return false;
  }
  // Quoted text and arrays are TOML; anything else is taken as a bare
  // string, except for integer settings where "8" must stay a number.
  std::string type = f != nullptr ? f->type : gf->type;
  value v;
  if (raw[0] == '"' || raw[0] == '\'' || raw[0] == '[') {
    if (!toml::parse_value(raw, v, err)) {
      error = where + key + ": " + err;
      return false;
    }
  } else if (type != "integer" || !toml::parse_value(raw, v, err)) {
    v = value::of_string(raw);
  }
  applier a{out, [&](position) {
              return where;
            }};
  if (auto e = a.set(path, v, {}); !e.empty()) {
    error = std::move(e);
    return false;
  }
  if (auto e = a.finish(); !e.empty()) {
    error = std::move(e);
    return false;
  }
  out = std::move(a.result());
  return true;
}

std::string render_settings(const node_settings& s) {
  std::string out
    = "# edda node settings, as printed by render_settings(): every key with\n"
      "# its type, default and meaning. Durations take ms, s, m, h or d\n"
      "# (a bare integer is ms); sizes take KiB, MiB, GiB or TiB (a bare\n"
      "# integer is bytes).\n";
  auto line = [&](const std::string& key, const value& v, const char* type,
                  const std::string& def, const char* description) {
    out += key + " = " + toml::format_value(v) + "  # " + type + ", default "
           + def + ": " + description + "\n";
  };
  node_settings defaults;
  std::string table;
  for (const auto& f : fields) {
    if (table_of(f.key) != table) {
      table = table_of(f.key);
      out += "\n[" + table + "]\n";
    }
    line(last_part(f.key), f.get(s), f.type, display(f.get(defaults)),
         f.description);
  }
  for (const auto& [name, g] : s.groups) {
    out += "\n[groups." + toml::quote(name) + "]\n";
    for (const auto& f : group_fields)
      line(f.name, f.get(g), f.type, f.inherits, f.description);
  }
  if (s.groups.empty())
    out += "\n# Per consumer group overrides; keys left out come from "
           "[consumer]:\n"
           "# [groups.\"orders\"]\n"
           "# max_reconsume = 3\n"
           "# retry_delays = [\"1s\", \"10s\", \"1m\"]\n";
  return out;
}

} // namespace edda::config
