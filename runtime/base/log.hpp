// Leveled logging to stderr through spdlog (CAF's own logger is compiled
// out on Debian). Thread-safe: each line is written whole. A text line:
//   2026-12-07T19:44:51.051Z INFO [node] started: ...
// (ISO 8601, UTC, milliseconds; the level; the component). With
// log.format = json, one JSON object per line: ts, level, component, node,
// msg, and the fields the call site gave (saga_id, txn_id, topic, group,
// partition, by, ...). Each component ("saga", "txn", ...) has its own
// level (log.levels), else the default (log.level).
#pragma once

#include <atomic>
#include <chrono>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace edda::log {

enum class level : int { debug = 0, info = 1, warn = 2, error = 3, off = 4 };
enum class format_kind { text, json };

/// A named part of the program with its own level. Made once per name and
/// kept for the whole process (call sites keep a reference).
class component {
public:
  explicit component(std::string name, level l)
    : name_(std::move(name)), level_(static_cast<int>(l)) {
  }
  [[nodiscard]] const std::string& name() const noexcept {
    return name_;
  }
  [[nodiscard]] bool enabled(level l) const noexcept {
    return static_cast<int>(l) >= level_.load(std::memory_order_relaxed);
  }
  void set(level l) noexcept {
    level_.store(static_cast<int>(l), std::memory_order_relaxed);
  }

private:
  std::string name_;
  std::atomic<int> level_;
};

/// The component called `name`, made on first use at its configured level.
[[nodiscard]] component& component_named(const char* name);

/// Structured fields of one line (JSON keys; ignored by the text format,
/// whose message says the same in words).
using field = std::pair<const char*, std::string>;
using fields = std::vector<field>;

/// The default level: every component without a level of its own.
void set_level(level x);
[[nodiscard]] level current_level();
/// Per-component levels, "saga=debug,txn=warn" (replaces earlier ones; ""
/// clears them). False, with `error`, on a malformed item (nothing set).
bool set_levels(const std::string& spec, std::string& error);
void set_format(format_kind f);
/// The `node` field of JSON lines (the process's node id or name).
void set_node(const std::string& node);
/// Parses "debug", "info", "warn", "error", "off"; false if unknown.
[[nodiscard]] bool parse_level(const std::string& text, level& out);

void write(level lvl, const component& c, const std::string& msg,
           const fields& f = {});
/// For callers without a component object (assertions).
void write(level lvl, const char* component, const std::string& msg);

/// The text line for a message logged at `at` (with its '\n').
[[nodiscard]] std::string format(std::chrono::system_clock::time_point at,
                                 level lvl, const char* component,
                                 const std::string& msg);
/// The JSON line (with its '\n').
[[nodiscard]] std::string format_json(std::chrono::system_clock::time_point at,
                                      level lvl, const std::string& component,
                                      const std::string& node,
                                      const std::string& msg, const fields& f);

} // namespace edda::log

/// Logs `expr` (streamed) at `lvl` for `comp` (a string literal) with the
/// structured fields given last: EDDA_LOG_F(level::info, "saga", "started "
/// << id, {"saga_id", id}, {"saga_type", type}).
#define EDDA_LOG_F(lvl, comp, expr, ...)                                       \
  do {                                                                         \
    static ::edda::log::component& edda_log_c_                                 \
      = ::edda::log::component_named(comp);                                    \
    if (edda_log_c_.enabled(lvl)) {                                            \
      std::ostringstream edda_log_os_;                                         \
      edda_log_os_ << expr;                                                    \
      ::edda::log::write(lvl, edda_log_c_, edda_log_os_.str(),                 \
                         ::edda::log::fields{__VA_ARGS__});                    \
    }                                                                          \
  } while (false)

#define EDDA_LOG(lvl, comp, expr) EDDA_LOG_F(lvl, comp, expr, )

#define EDDA_DEBUG(c, e) EDDA_LOG(::edda::log::level::debug, c, e)
#define EDDA_INFO(c, e) EDDA_LOG(::edda::log::level::info, c, e)
#define EDDA_WARN(c, e) EDDA_LOG(::edda::log::level::warn, c, e)
#define EDDA_ERROR(c, e) EDDA_LOG(::edda::log::level::error, c, e)
#define EDDA_DEBUG_F(c, e, ...) EDDA_LOG_F(::edda::log::level::debug, c, e, __VA_ARGS__)
#define EDDA_INFO_F(c, e, ...) EDDA_LOG_F(::edda::log::level::info, c, e, __VA_ARGS__)
#define EDDA_WARN_F(c, e, ...) EDDA_LOG_F(::edda::log::level::warn, c, e, __VA_ARGS__)

/// Invariant violation: log with context and abort, so that a supervisor
/// (or the operator) restarts from disk rather than continuing corrupt.
#define EDDA_ASSERT(cond, what)                                                \
  do {                                                                         \
    if (!(cond)) {                                                             \
      ::edda::log::write(::edda::log::level::error, "assert",                  \
                         std::string(#cond) + " failed: " + (what));           \
      std::abort();                                                            \
    }                                                                          \
  } while (false)
