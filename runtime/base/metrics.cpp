#include "base/metrics.hpp"

#include <memory>
#include <mutex>
#include <tuple>

namespace edda::metrics {

namespace {
std::mutex mtx_;
std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>>& all() {
  static std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>> m;
  return m;
}
using histogram_key = std::tuple<std::string, std::string, std::string>;
std::map<histogram_key, std::unique_ptr<histogram>>& all_histograms() {
  static std::map<histogram_key, std::unique_ptr<histogram>> m;
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

void histogram::observe(double seconds) {
  size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i])
    ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  auto ns = seconds > 0 ? static_cast<uint64_t>(seconds * 1e9) : 0;
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

histogram::reading histogram::read() const {
  reading r;
  uint64_t running = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    r.buckets[i] = running;
  }
  r.count = running + counts_[bounds.size()].load(std::memory_order_relaxed);
  r.sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return r;
}

histogram& latency(const std::string& name, const std::string& label,
                   const std::string& value) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& slot = all_histograms()[histogram_key{name, label, value}];
  if (!slot)
    slot = std::make_unique<histogram>();
  return *slot;
}

std::vector<histogram_reading> histograms() {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<histogram_reading> out;
  for (auto& [k, h] : all_histograms())
    out.push_back(histogram_reading{std::get<0>(k), std::get<1>(k),
                                    std::get<2>(k), h->read()});
  return out;
}

} // namespace edda::metrics
