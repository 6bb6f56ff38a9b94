// The edda command's argument parser (runtime/cli/args.hpp): what a user
// types by mistake is refused or answered with help, never taken as a name.
#include "cli/args.hpp"

#include <gtest/gtest.h>

namespace edda::cli {
namespace {

TEST(ArgsTest, DashHIsHelpAndNeverAName) {
  args a;
  std::string err;
  ASSERT_TRUE(a.parse({"start", "-h"}, {"help", "wait"}, {"node"}, err)) << err;
  EXPECT_TRUE(a.has("help"));
  EXPECT_EQ(a.positional, (std::vector<std::string>{"start"}));
}

TEST(ArgsTest, ASingleDashWordIsAnUnknownOptionUnlessAfterDoubleDash) {
  args a;
  std::string err;
  EXPECT_FALSE(a.parse({"start", "-x"}, {"help"}, {}, err));
  EXPECT_NE(err.find("unknown option -x"), std::string::npos) << err;
  // -h where a command has no --help is refused too.
  args b;
  EXPECT_FALSE(b.parse({"-h"}, {}, {}, err));
  // After --, words are positional, dashes and all; "-" alone is one.
  args c;
  ASSERT_TRUE(c.parse({"--wait", "--", "-5", "--x"}, {"wait"}, {}, err)) << err;
  EXPECT_TRUE(c.has("wait"));
  EXPECT_EQ(c.positional, (std::vector<std::string>{"-5", "--x"}));
  args d;
  ASSERT_TRUE(d.parse({"-"}, {}, {}, err)) << err;
  EXPECT_EQ(d.positional, (std::vector<std::string>{"-"}));
}

TEST(ArgsTest, ValuedOptionsTakeTheNextWordEvenWithADash) {
  args a;
  std::string err;
  ASSERT_TRUE(a.parse({"--offset", "-1", "--to=x"}, {}, {"offset", "to"}, err))
    << err;
  EXPECT_EQ(a.get("offset"), "-1");
  EXPECT_EQ(a.get("to"), "x");
  args b;
  EXPECT_FALSE(b.parse({"--nope"}, {}, {}, err));
  EXPECT_NE(err.find("unknown option --nope"), std::string::npos);
}

} // namespace
} // namespace edda::cli
