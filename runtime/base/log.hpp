// Minimal leveled logging to stderr (CAF's own logger is compiled out on
// Debian). Thread-safe: each line is written with one call. A line:
//   2026-12-07T19:44:51.051Z INFO [node] started: ...
// (ISO 8601, UTC, milliseconds; the level; the component).
#pragma once

#include <chrono>
#include <sstream>
#include <string>

namespace edda::log {

enum class level : int { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

void set_level(level x);
[[nodiscard]] level current_level();
/// Parses "debug", "info", "warn", "error", "off"; false if unknown.
[[nodiscard]] bool parse_level(const std::string& text, level& out);
void write(level lvl, const char* component, const std::string& line);
/// The line write() prints for a message logged at `at` (with its '\n').
[[nodiscard]] std::string format(std::chrono::system_clock::time_point at,
                                 level lvl, const char* component,
                                 const std::string& line);

} // namespace edda::log

#define EDDA_LOG(lvl, component, expr)                                         \
  do {                                                                         \
    if (static_cast<int>(lvl) >= static_cast<int>(::edda::log::current_level())) { \
      std::ostringstream edda_log_os_;                                         \
      edda_log_os_ << expr;                                                    \
      ::edda::log::write(lvl, component, edda_log_os_.str());                  \
    }                                                                          \
  } while (false)

#define EDDA_DEBUG(c, e) EDDA_LOG(::edda::log::level::debug, c, e)
#define EDDA_INFO(c, e) EDDA_LOG(::edda::log::level::info, c, e)
#define EDDA_WARN(c, e) EDDA_LOG(::edda::log::level::warn, c, e)
#define EDDA_ERROR(c, e) EDDA_LOG(::edda::log::level::error, c, e)

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
