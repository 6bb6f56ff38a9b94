// Process-wide named counters (alerts raised, messages stored, ...).
// Thread-safe; counters live for the whole process.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

namespace edda::metrics {

/// The counter named `name`, created at zero on first use.
std::atomic<uint64_t>& counter(const std::string& name);

/// A snapshot of every counter, by name.
[[nodiscard]] std::map<std::string, uint64_t> snapshot();

} // namespace edda::metrics
