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

namespace {

using edda::log::level;

TEST(LogTest, AJsonLineHasTheFixedKeysThenTheFieldsEscaped) {
  std::chrono::system_clock::time_point at{
    std::chrono::milliseconds{1796672691051}};
  auto line = edda::log::format_json(
    at, level::info, "saga", "n1", "saga s-1 \"quoted\"\nnext",
    {{"saga_id", "s-1"}, {"by", "alice"}, {"key", std::string("\xff", 1)}});
  EXPECT_EQ(line, "{\"ts\":\"2026-12-07T19:44:51.051Z\",\"level\":\"info\","
                  "\"component\":\"saga\",\"node\":\"n1\",\"msg\":\"saga s-1 "
                  "\\\"quoted\\\"\\nnext\",\"saga_id\":\"s-1\",\"by\":\"alice\","
                  "\"key\":\"\xef\xbf\xbd\"}\n");
  // Without a node (a tool, not a node): no node key.
  EXPECT_EQ(edda::log::format_json(at, level::warn, "x", "", "m", {}),
            "{\"ts\":\"2026-12-07T19:44:51.051Z\",\"level\":\"warn\","
            "\"component\":\"x\",\"msg\":\"m\"}\n");
}

TEST(LogTest, AComponentFollowsItsOwnLevelElseTheDefault) {
  struct restore {
    ~restore() {
      edda::log::set_level(level::info);
      std::string e;
      (void) edda::log::set_levels("", e);
    }
  } guard; // also when an assertion returns early
  auto& saga = edda::log::component_named("test_saga");
  auto& txn = edda::log::component_named("test_txn");
  EXPECT_EQ(&saga, &edda::log::component_named("test_saga"));
  edda::log::set_level(level::warn);
  std::string err;
  ASSERT_TRUE(edda::log::set_levels(" test_saga = debug , test_txn=off", err))
    << err;
  EXPECT_TRUE(saga.enabled(level::debug));
  EXPECT_FALSE(txn.enabled(level::error));
  // A component made later takes its configured level too.
  auto& later = edda::log::component_named("test_later");
  EXPECT_FALSE(later.enabled(level::info));
  EXPECT_TRUE(later.enabled(level::warn));
  // A malformed spec changes nothing and says which item.
  EXPECT_FALSE(edda::log::set_levels("test_saga=loud", err));
  EXPECT_NE(err.find("'test_saga=loud' is not COMPONENT=LEVEL"),
            std::string::npos)
    << err;
  EXPECT_TRUE(saga.enabled(level::debug));
  EXPECT_FALSE(edda::log::set_levels("=info", err));
  // The default moves the components without a level of their own.
  edda::log::set_level(level::debug);
  EXPECT_TRUE(later.enabled(level::debug));
  EXPECT_FALSE(txn.enabled(level::error));
  ASSERT_TRUE(edda::log::set_levels("", err));
  EXPECT_TRUE(txn.enabled(level::debug));
  edda::log::set_level(level::info);
}

} // namespace

namespace {

TEST(LogTest, ALineCannotBeForgedAndFieldsNeverOverrideTheFixedKeys) {
  std::chrono::system_clock::time_point at{std::chrono::seconds{0}};
  // An operator's name with a newline and a fake line behind it.
  EXPECT_EQ(edda::log::format(at, edda::log::level::info, "audit",
                              "by x\n1970-01-01T00:00:00.000Z INFO [audit] y\x01"),
            "1970-01-01T00:00:00.000Z INFO [audit] by x\\n1970-01-01T00:00:"
            "00.000Z INFO [audit] y\\x01\n");
  auto line = edda::log::format_json(at, edda::log::level::info, "audit", "n1",
                                     "m", {{"msg", "forged"}, {"level", "x"}});
  EXPECT_NE(line.find("\"msg\":\"m\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"msg_field\":\"forged\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"level\":\"info\""), std::string::npos) << line;
}

TEST(LogTest, AuditLinesStayAtInfoUnderAQuieterDefault) {
  struct restore {
    ~restore() {
      edda::log::set_level(edda::log::level::info);
      std::string e;
      (void) edda::log::set_levels("", e);
    }
  } guard;
  auto& audit = edda::log::component_named("audit");
  edda::log::set_level(edda::log::level::warn);
  EXPECT_TRUE(audit.enabled(edda::log::level::info));
  EXPECT_FALSE(edda::log::component_named("test_other")
                 .enabled(edda::log::level::info));
  std::string err;
  ASSERT_TRUE(edda::log::set_levels("audit=off", err)) << err;
  EXPECT_FALSE(audit.enabled(edda::log::level::error)); // asked by name
}

} // namespace
