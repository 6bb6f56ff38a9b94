#include "base/metrics.hpp"

#include <memory>
#include <mutex>

namespace edda::metrics {

namespace {
std::mutex mtx_;
std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>>& all() {
  static std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>> m;
  return m;
}
} // namespace

std::atomic<uint64_t>& counter(const std::string& name) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& slot = all()[name];
  if (!slot)
    slot = std::make_unique<std::atomic<uint64_t>>(0);
  return *slot;
}

std::map<std::string, uint64_t> snapshot() {
  std::lock_guard<std::mutex> guard{mtx_};
  std::map<std::string, uint64_t> out;
  for (auto& [k, v] : all())
    out[k] = v->load();
  return out;
}

} // namespace edda::metrics
