#include "base/failpoint.hpp"

#include "base/log.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

namespace edda::failpoint {

namespace {
std::atomic<bool> armed_{false};
std::mutex mtx_;
struct point {
  long remaining = 1;
  bool hang = false; // block the hitting thread for ever instead of crashing
};
std::map<std::string, point>& points() {
  static std::map<std::string, point> m;
  return m;
}
void load();
} // namespace

void init_from_env() {
  static std::once_flag once;
  std::call_once(once, [] { load(); });
}

void hit(const char* name) {
  init_from_env(); // any process (node or client) honours EDDA_FAILPOINTS
  if (!armed_.load(std::memory_order_relaxed))
    return;
  std::unique_lock<std::mutex> guard{mtx_};
  auto i = points().find(name);
  if (i == points().end())
    return;
  if (--i->second.remaining == 0) {
    if (i->second.hang) {
      EDDA_WARN("failpoint", "hanging at " << name);
      guard.unlock();
      for (;;)
        ::pause();
    }
    EDDA_WARN("failpoint", "crashing at " << name);
    ::kill(::getpid(), SIGKILL);
  }
}

namespace {
void load() {
  const char* spec = std::getenv("EDDA_FAILPOINTS");
  if (spec == nullptr || *spec == '\0')
    return;
  std::lock_guard<std::mutex> guard{mtx_};
  std::string s = spec;
  size_t pos = 0;
  while (pos < s.size()) {
    auto end = s.find(',', pos);
    if (end == std::string::npos)
      end = s.size();
    auto item = s.substr(pos, end - pos);
    pos = end + 1;
    auto eq = item.find('=');
    if (eq == std::string::npos)
      continue;
    auto name = item.substr(0, eq);
    auto action = item.substr(eq + 1);
    long nth = 1;
    if (auto at = action.find('@'); at != std::string::npos) {
      nth = std::strtol(action.c_str() + at + 1, nullptr, 10);
      action = action.substr(0, at);
    }
    if ((action != "crash" && action != "hang") || nth < 1) {
      EDDA_WARN("failpoint", "ignoring '" << item
                                          << "' (use name=crash@N or "
                                             "name=hang@N)");
      continue;
    }
    points()[name].remaining = nth;
    points()[name].hang = action == "hang";
    EDDA_INFO("failpoint", "armed " << name << " (" << action << " at hit "
                                    << nth << ")");
  }
  armed_ = !points().empty();
}
} // namespace

} // namespace edda::failpoint
