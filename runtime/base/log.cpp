#include "base/log.hpp"

#include "base/ids.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>
#include <unistd.h>

namespace edda::log {

namespace {
std::atomic<int> level_{static_cast<int>(level::info)};
const char* names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};
} // namespace

void set_level(level x) {
  level_ = static_cast<int>(x);
}

level current_level() {
  return static_cast<level>(level_.load(std::memory_order_relaxed));
}

bool parse_level(const std::string& text, level& out) {
  for (int i = 0; i <= 4; ++i) {
    std::string n = names[i];
    for (auto& c : n)
      c = static_cast<char>(std::tolower(c));
    if (n == text) {
      out = static_cast<level>(i);
      return true;
    }
  }
  return false;
}

std::string format(std::chrono::system_clock::time_point at, level lvl,
                   const char* component, const std::string& line) {
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
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ ", static_cast<int>(ms));
  std::string out;
  out.reserve(line.size() + 64);
  out += buf;
  out += names[static_cast<int>(lvl)];
  out += " [";
  out += component;
  out += "] ";
  out += line;
  out += '\n';
  return out;
}

void write(level lvl, const char* component, const std::string& line) {
  auto out = format(std::chrono::system_clock::now(), lvl, component, line);
  std::fwrite(out.data(), 1, out.size(), stderr);
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
