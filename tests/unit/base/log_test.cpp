#include "base/log.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace {

TEST(LogTest, ALineStartsWithAnIso8601UtcTimestamp) {
  // 2026-12-07T19:44:51.051Z, whatever the machine's time zone.
  std::chrono::system_clock::time_point at{
    std::chrono::milliseconds{1796672691051}};
  EXPECT_EQ(edda::log::format(at, edda::log::level::warn, "node", "hello"),
            "2026-12-07T19:44:51.051Z WARN [node] hello\n");
  std::chrono::system_clock::time_point whole{std::chrono::seconds{0}};
  EXPECT_EQ(edda::log::format(whole, edda::log::level::info, "x", ""),
            "1970-01-01T00:00:00.000Z INFO [x] \n");
}

} // namespace
