// Process-wide named counters (alerts raised, messages stored, ...) and
// latency histograms (a commit, a saga step). Thread-safe; both live for
// the whole process.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edda::metrics {

/// The counter named `name`, created at zero on first use.
std::atomic<uint64_t>& counter(const std::string& name);

/// A snapshot of every counter, by name.
[[nodiscard]] std::map<std::string, uint64_t> snapshot();

/// A latency histogram with fixed bucket bounds in seconds (from 100 us to
/// 10 s), as Prometheus keeps them: observe() is a few relaxed atomic adds.
class histogram {
public:
  static constexpr std::array<double, 16> bounds{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};

  void observe(double seconds);
  void observe(std::chrono::steady_clock::duration d) {
    observe(std::chrono::duration<double>(d).count());
  }

  struct reading {
    /// Cumulative: buckets[i] counts observations <= bounds[i].
    std::array<uint64_t, bounds.size()> buckets{};
    uint64_t count = 0; // every observation (the +Inf bucket)
    double sum = 0;     // seconds
  };
  [[nodiscard]] reading read() const;

private:
  std::array<std::atomic<uint64_t>, bounds.size() + 1> counts_{}; // + over
  std::atomic<uint64_t> sum_ns_{0};
};

/// The histogram of family `name` with one label (`label` = `value`), or
/// none when `label` is empty; created empty on first use. Keep the
/// reference: the lookup takes a lock.
histogram& latency(const std::string& name, const std::string& label = {},
                   const std::string& value = {});

struct histogram_reading {
  std::string name;
  std::string label; // empty: no label
  std::string value;
  histogram::reading data;
};

/// Every histogram, by name then label value.
[[nodiscard]] std::vector<histogram_reading> histograms();

} // namespace edda::metrics
