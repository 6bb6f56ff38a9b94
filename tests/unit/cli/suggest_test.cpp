// Did-you-mean of the edda command (runtime/cli/suggest.hpp).
#include "cli/suggest.hpp"

#include <gtest/gtest.h>

namespace edda::cli {
namespace {

TEST(SuggestTest, EditDistanceCountsInsertionsDeletionsSubstitutionsAndSwaps) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("topic", "topic"), 0u);
  EXPECT_EQ(edit_distance("topc", "topic"), 1u);    // an insertion
  EXPECT_EQ(edit_distance("topics", "topic"), 1u);  // a deletion
  EXPECT_EQ(edit_distance("topix", "topic"), 1u);   // a substitution
  EXPECT_EQ(edit_distance("craete", "create"), 1u); // a swap
  EXPECT_EQ(edit_distance("partiton", "partitions"), 2u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

TEST(SuggestTest, ClosestIsTheNearestKnownNameWithinTheThreshold) {
  std::vector<std::string> commands{"node",  "topic", "produce", "consume",
                                    "group", "saga",  "status",  "cluster"};
  EXPECT_EQ(closest("topc", commands), "topic");
  EXPECT_EQ(closest("prodcue", commands), "produce");
  EXPECT_EQ(closest("clustr", commands), "cluster");
  EXPECT_EQ(closest("sgaa", commands), "saga");
  // Too far from everything: nothing.
  EXPECT_EQ(closest("frobnicate", commands), "");
  EXPECT_EQ(closest("", commands), "");
  // A short word is not turned into any other short word.
  EXPECT_EQ(closest("x", std::vector<std::string>{"--to", "--by"}), "");
  EXPECT_EQ(closest("ab", std::vector<std::string>{"cd"}), "");
}

TEST(SuggestTest, OptionsAreComparedWithoutTheirDashes) {
  std::vector<std::string> options{"--help", "--node", "--json",
                                   "--partitions"};
  EXPECT_EQ(closest("--partiton", options), "--partitions");
  EXPECT_EQ(closest("--partitons", options), "--partitions");
  EXPECT_EQ(closest("-partitions", options), "--partitions");
  EXPECT_EQ(closest("--jsno", options), "--json");
  EXPECT_EQ(closest("--nodes", options), "--node");
  EXPECT_EQ(closest("-x", options), "");
  // A longer name allows a third of its length: 3 edits in 10 letters,
  // not 4.
  EXPECT_EQ(closest("--pxrtxtixns", options), "--partitions");
  EXPECT_EQ(closest("--pxrtxtxxns", options), "");
}

TEST(SuggestTest, TiesGoToTheFirstKnownName) {
  EXPECT_EQ(closest("cat", std::vector<std::string>{"bat", "cap"}), "bat");
  EXPECT_EQ(closest("cat", std::vector<std::string>{"cap", "bat"}), "cap");
}

} // namespace
} // namespace edda::cli
