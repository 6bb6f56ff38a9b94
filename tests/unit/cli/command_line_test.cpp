// The edda command line (runtime/cli/command_line.hpp), parsed without a
// node: help on every command, usage errors with their exit code and a
// did-you-mean, and what a parse fills in.
#include "cli/command_line.hpp"

#include <gtest/gtest.h>
#include <sstream>

namespace edda::cli {
namespace {

using strings = std::vector<std::string>;

struct parsed {
  int rc = 0;
  std::string out;
  std::string err;
  command_line cl;
};

parsed run(const strings& args) {
  parsed p;
  std::ostringstream out, err;
  p.rc = parse(args, p.cl, out, err);
  p.out = out.str();
  p.err = err.str();
  return p;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string joined(const strings& words) {
  std::string out;
  for (auto& w : words)
    out += (out.empty() ? "" : " ") + w;
  return out;
}

TEST(CommandLineTest, EveryCommandAndSubcommandHasItsHelp) {
  const std::vector<strings> commands{
    {"node"},
    {"topic"},
    {"topic", "create"},
    {"topic", "list"},
    {"topic", "describe"},
    {"topic", "alter"},
    {"topic", "delete"},
    {"produce"},
    {"consume"},
    {"group"},
    {"group", "list"},
    {"group", "describe"},
    {"group", "reset-offsets"},
    {"message"},
    {"message", "show"},
    {"message", "find"},
    {"dlq"},
    {"dlq", "list"},
    {"dlq", "redrive"},
    {"txn"},
    {"txn", "list"},
    {"txn", "show"},
    {"txn", "resolve"},
    {"saga"},
    {"saga", "list"},
    {"saga", "show"},
    {"saga", "start"},
    {"saga", "pause"},
    {"saga", "resume"},
    {"saga", "retry"},
    {"saga", "skip"},
    {"saga", "compensate"},
    {"status"},
    {"backup"},
    {"cluster"},
    {"cluster", "status"},
    {"cluster", "elect"},
    {"cluster", "add-replica"},
    {"cluster", "move-group"},
    {"bench"},
  };
  for (const auto& command : commands)
    for (const char* flag : {"-h", "--help"}) {
      auto args = command;
      args.emplace_back(flag);
      auto p = run(args);
      EXPECT_EQ(p.rc, exit_ok) << joined(args) << ": " << p.err;
      EXPECT_TRUE(has(p.out, "Usage: edda " + joined(command)))
        << joined(args) << ":\n"
        << p.out;
      EXPECT_TRUE(p.err.empty()) << joined(args) << ": " << p.err;
    }
  // The main help: the commands, the node options, the exit codes.
  for (const strings& args :
       {strings{"-h"}, strings{"--help"}, strings{"help"}}) {
    auto p = run(args);
    EXPECT_EQ(p.rc, exit_ok);
    for (const char* part : {"Usage: edda", "topic", "saga", "bench",
                             "--node HOST:PORT", "$EDDA_NODE", "Exit codes:",
                             "2  usage", "3  not found", "4  unavailable"})
      EXPECT_TRUE(has(p.out, part)) << part << " missing in:\n" << p.out;
  }
  // `edda help COMMAND` is `edda COMMAND --help`.
  auto topic = run({"help", "topic"});
  EXPECT_EQ(topic.rc, exit_ok);
  EXPECT_TRUE(has(topic.out, "edda topic alter NAME [--partitions N]"))
    << topic.out;
}

TEST(CommandLineTest, HelpKeepsWhatTheOldHelpSaid) {
  auto group = run({"group", "-h"});
  EXPECT_TRUE(has(group.out, "edda group describe GROUP")) << group.out;
  auto create = run({"topic", "create", "--help"});
  EXPECT_TRUE(has(create.out, "--partitions N")) << create.out;
  EXPECT_TRUE(has(create.out, "broker.default_partitions")) << create.out;
  EXPECT_TRUE(has(create.out, "--node HOST:PORT")) << create.out;
  auto produce = run({"produce", "-h"});
  EXPECT_TRUE(has(produce.out, "(default edda-cli)")) << produce.out;
  auto move = run({"cluster", "move-group", "-h"});
  EXPECT_TRUE(has(move.out, "To replace a machine")) << move.out;
  // A subcommand's help is its own: not the group's footer again.
  EXPECT_FALSE(has(create.out, "edda topic delete NAME")) << create.out;
}

TEST(CommandLineTest, NoCommandIsAUsageErrorThatShowsTheHelp) {
  auto none = run({});
  EXPECT_EQ(none.rc, exit_usage);
  EXPECT_TRUE(has(none.out, "Exit codes:")) << none.out;
  for (const char* group :
       {"topic", "group", "dlq", "txn", "saga", "cluster", "bench"}) {
    auto p = run({group});
    EXPECT_EQ(p.rc, exit_usage) << group;
    EXPECT_TRUE(has(p.out, std::string{"Usage: edda "} + group)) << p.out;
  }
}

TEST(CommandLineTest, AMistypedCommandOrOptionGetsADidYouMean) {
  auto topc = run({"topc", "list"});
  EXPECT_EQ(topc.rc, exit_usage);
  EXPECT_TRUE(has(topc.err, "edda: unknown command 'topc'; did you mean "
                            "'topic'?"))
    << topc.err;
  auto craete = run({"topic", "craete", "orders"});
  EXPECT_EQ(craete.rc, exit_usage);
  EXPECT_TRUE(has(craete.err, "unknown topic command 'craete'; did you mean "
                              "'create'?"))
    << craete.err;
  auto partiton = run({"topic", "create", "t", "--partiton", "3"});
  EXPECT_EQ(partiton.rc, exit_usage);
  EXPECT_TRUE(has(partiton.err, "edda: unknown option --partiton; did you "
                                "mean --partitions?"))
    << partiton.err;
  EXPECT_TRUE(has(partiton.err, "edda topic create --help")) << partiton.err;
  auto equals = run({"produce", "--topc=orders", "x"});
  EXPECT_EQ(equals.rc, exit_usage);
  EXPECT_TRUE(has(equals.err, "unknown option --topc; did you mean --topic?"))
    << equals.err;
  // Nothing close: no suggestion.
  auto far = run({"frobnicate"});
  EXPECT_EQ(far.rc, exit_usage);
  EXPECT_TRUE(has(far.err, "unknown command 'frobnicate'")) << far.err;
  EXPECT_FALSE(has(far.err, "did you mean")) << far.err;
  // One argument too many.
  auto extra = run({"group", "describe", "billing", "more"});
  EXPECT_EQ(extra.rc, exit_usage);
  EXPECT_TRUE(has(extra.err, "unexpected argument 'more'")) << extra.err;
}

TEST(CommandLineTest, AWordStartingWithADashIsNeverAName) {
  for (const strings& args :
       {strings{"saga", "start", "-x", "--node", "127.0.0.1:1"},
        strings{"saga", "start", "-5"}, strings{"topic", "create", "---x"},
        strings{"produce", "--topic", "t", "hello", "-1"}}) {
    auto p = run(args);
    EXPECT_EQ(p.rc, exit_usage) << joined(args);
    EXPECT_TRUE(has(p.err, "unknown option -"))
      << joined(args) << ": " << p.err;
    EXPECT_TRUE(p.cl.path.empty()) << joined(args);
  }
  auto x = run({"saga", "start", "-x"});
  EXPECT_TRUE(has(x.err, "goes after --")) << x.err;
  // After --, it is one.
  auto after = run({"saga", "start", "--wait", "5", "--", "-5"});
  ASSERT_EQ(after.rc, -1) << after.err;
  EXPECT_EQ(after.cl.saga.type, "-5");
  EXPECT_EQ(after.cl.saga.wait.value, 5u);
  // After --, an option's name is an argument too: one too many here.
  auto more = run({"saga", "start", "--", "-x", "--wait", "5"});
  EXPECT_EQ(more.rc, exit_usage);
  EXPECT_TRUE(has(more.err, "unexpected argument '--wait'")) << more.err;
  auto extra = run({"saga", "start", "t", "--", "-x"});
  EXPECT_EQ(extra.rc, exit_usage);
  EXPECT_TRUE(has(extra.err, "unexpected argument '-x'")) << extra.err;
  auto typo = run({"saga", "start", "--wiat", "5", "--", "-x"});
  EXPECT_EQ(typo.rc, exit_usage);
  EXPECT_TRUE(has(typo.err, "unknown option --wiat; did you mean --wait?"))
    << typo.err;
  // An option's value may start with one.
  auto value = run({"produce", "--topic", "t", "--key", "-k", "body"});
  ASSERT_EQ(value.rc, -1) << value.err;
  EXPECT_EQ(value.cl.produce.key, "-k");
  // "-" alone is a word.
  auto dash = run({"produce", "--topic", "t", "-"});
  ASSERT_EQ(dash.rc, -1) << dash.err;
  EXPECT_EQ(dash.cl.produce.body, strings{"-"});
}

TEST(CommandLineTest, OptionsTakeTheirValueEitherWayAndRepeatableOnesRepeat) {
  auto p = run({"produce", "--topic=orders", "--key", "k1", "--tag", "A",
                "--tag=B", "--prop", "x=1", "--prop=y=2", "--count", "10",
                "--json", "--node=127.0.0.1:9", "hello", "world"});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_EQ(p.cl.path, strings{"produce"});
  const auto& o = p.cl.produce;
  EXPECT_EQ(o.topic, "orders");
  EXPECT_EQ(o.key, "k1");
  EXPECT_EQ(o.tags, (strings{"A", "B"}));
  EXPECT_EQ(o.props, (strings{"x=1", "y=2"}));
  EXPECT_TRUE(o.count.given);
  EXPECT_EQ(o.count.value, 10u);
  EXPECT_EQ(o.size.value, 256u);
  EXPECT_EQ(o.window.value, 256u);
  EXPECT_EQ(o.group, "edda-cli");
  EXPECT_EQ(o.body, (strings{"hello", "world"}));
  EXPECT_TRUE(p.cl.conn.json);
  EXPECT_EQ(p.cl.conn.node, "127.0.0.1:9");
  // A tag takes one word: the next is the body.
  auto tag = run({"produce", "--topic", "t", "--tag", "A", "body"});
  ASSERT_EQ(tag.rc, -1) << tag.err;
  EXPECT_EQ(tag.cl.produce.tags, strings{"A"});
  EXPECT_EQ(tag.cl.produce.body, strings{"body"});
  auto node = run({"node", "--set", "a=1", "--set", "b=2", "--data-dir", "d",
                   "--print-config"});
  ASSERT_EQ(node.rc, -1) << node.err;
  EXPECT_EQ(node.cl.node.set, (strings{"a=1", "b=2"}));
  EXPECT_EQ(node.cl.node.data_dir, "d");
  EXPECT_TRUE(node.cl.node.print_config);
  auto ids = run({"dlq", "redrive", "--group", "g", "--id", "1", "--id", "2"});
  ASSERT_EQ(ids.rc, -1) << ids.err;
  EXPECT_EQ(ids.cl.path, (strings{"dlq", "redrive"}));
  EXPECT_EQ(ids.cl.dlq.ids, (strings{"1", "2"}));
  // The last of a single-valued option counts.
  auto last = run({"status", "--node", "a:1", "--node", "b:2"});
  ASSERT_EQ(last.rc, -1) << last.err;
  EXPECT_EQ(last.cl.conn.node, "b:2");
}

TEST(CommandLineTest, NodeOptionsGoOnEveryCommandThatTalksToANode) {
  auto before = run({"topic", "--json", "list", "--node", "h:1"});
  ASSERT_EQ(before.rc, -1) << before.err;
  EXPECT_EQ(before.cl.path, (strings{"topic", "list"}));
  EXPECT_TRUE(before.cl.conn.json);
  EXPECT_EQ(before.cl.conn.node, "h:1");
  auto all = run({"saga", "show", "s1", "--token", "secret", "--node-port"});
  ASSERT_EQ(all.rc, -1) << all.err;
  EXPECT_EQ(all.cl.saga.id, "s1");
  EXPECT_EQ(all.cl.conn.token, "secret");
  EXPECT_TRUE(all.cl.conn.node_port);
  EXPECT_EQ(all.cl.saga.by, "operator:cli");
  // A node does not talk to one.
  auto node = run({"node", "--json"});
  EXPECT_EQ(node.rc, exit_usage);
  EXPECT_TRUE(has(node.err, "unknown option --json")) << node.err;
}

TEST(CommandLineTest, ArgumentsThatCannotBeRightAreUsageErrors) {
  struct mistake {
    strings args;
    std::string says;
  };
  for (const auto& m : std::vector<mistake>{
         {{"topic", "create", "t", "--partitions", "0"},
          "--partitions must be at least 1"},
         {{"topic", "alter", "t", "--partitions", "0"},
          "--partitions must be at least 1"},
         {{"topic", "alter", "t"},
          "topic alter needs --partitions N, --retention D or "
          "--retention-bytes S"},
         {{"topic", "alter", "t", "--retention", "3 days"},
          "--retention: '3 days' is not a duration"},
         {{"topic", "alter", "t", "--retention-bytes", "1GB"},
          "--retention-bytes: '1GB' is not a size"},
         {{"group", "reset-offsets", "g", "--topic", "t"},
          "needs one of --to-earliest, --to-latest, --to-offset N, "
          "--to-datetime TIME"},
         {{"group", "reset-offsets", "g", "--topic", "t", "--to-earliest",
           "--to-latest"},
          "needs one of --to-earliest"},
         {{"group", "reset-offsets", "g", "--to-earliest"},
          "group reset-offsets needs GROUP and --topic T"},
         {{"group", "reset-offsets", "g", "--topic", "t", "--to-latest",
           "--force"},
          "--force goes with --execute"},
         {{"group", "reset-offsets", "g", "--topic", "t", "--to-datetime",
           "yesterday"},
          "--to-datetime: 'yesterday' is not a time"},
         {{"message", "find", "--topic", "t"},
          "message find needs --key K or --since TIME"},
         {{"message", "find", "--topic", "t", "--since", "2026-13-01"},
          "--since: '2026-13-01' is not a time"},
         {{"message", "show"}, "message show needs one message ID"},
         {{"topic", "describe"}, "topic describe needs a topic NAME"},
         {{"topic", "create", "t", "--partitions", "x"},
          "--partitions expects a non-negative integer, got 'x'"},
         {{"topic", "create", "t", "--partitions", "-1"},
          "--partitions expects a non-negative integer, got '-1'"},
         {{"topic", "create", "t", "--partitions"},
          "option --partitions needs a value"},
         {{"produce", "body"}, "produce needs --topic"},
         {{"produce", "--topic", "t", "--window", "0"},
          "--window must be at least 1"},
         {{"produce", "--topic", "t", "--prop", "novalue"},
          "--prop expects KEY=VALUE, got 'novalue'"},
         {{"consume", "--topic", "t"}, "consume needs --topic and --group"},
         {{"consume", "--topic", "t", "--group", "g", "--from", "middle"},
          "--from expects earliest or latest, got 'middle'"},
         {{"group", "describe"}, "group describe needs one GROUP"},
         {{"dlq", "list"}, "dlq needs --group"},
         {{"txn", "show"}, "wrong arguments for txn show"},
         {{"txn", "resolve", "t1", "maybe"}, "wrong arguments for txn resolve"},
         {{"saga", "start"}, "wrong arguments for saga start"},
         {{"saga", "skip", "s1"}, "wrong arguments for saga skip"},
         {{"backup"}, "backup needs one NAME"},
         {{"cluster", "elect"},
          "cluster elect needs the NODE whose group to elect"},
         {{"cluster", "elect", "n1", "--by", "me"},
          "elect asks for an unclean one: --unclean"},
         {{"cluster", "elect", "n1", "--unclean"},
          "an unclean election is recorded with who asked: --by NAME"},
         {{"cluster", "move-group", "n1", "--by", "me"},
          "cluster move-group needs GROUP and --to NODE"},
         {{"cluster", "add-replica", "n1", "--by", "me"},
          "cluster add-replica needs GROUP and NODE"},
         {{"cluster", "move-group", "n1", "--to", "n2"},
          "a move or a replica is recorded with who asked: --by NAME"},
         {{"node", "extra"}, "unexpected argument 'extra'"},
       }) {
    auto p = run(m.args);
    EXPECT_EQ(p.rc, exit_usage) << joined(m.args);
    EXPECT_TRUE(has(p.err, "edda: ") && has(p.err, m.says))
      << joined(m.args) << ": " << p.err;
    EXPECT_TRUE(p.out.empty()) << joined(m.args) << ": " << p.out;
  }
}

TEST(CommandLineTest, AResetOfOffsetsAndAFindSayWhatTheyWant) {
  auto p = run({"group", "reset-offsets", "billing", "--topic", "orders",
                "--to-datetime", "2026-12-08T09:30:00Z", "--execute",
                "--by", "alice"});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_EQ(p.cl.group.name, "billing");
  EXPECT_EQ(p.cl.group.topic, "orders");
  EXPECT_EQ(p.cl.group.datetime_ms, 1796722200000);
  EXPECT_TRUE(p.cl.group.execute);
  EXPECT_FALSE(p.cl.group.force);
  EXPECT_EQ(p.cl.group.by, "alice");
  p = run({"group", "reset-offsets", "billing", "--topic", "orders",
           "--to-offset", "17"});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_TRUE(p.cl.group.to_offset.given);
  EXPECT_EQ(p.cl.group.to_offset.value, 17u);
  EXPECT_FALSE(p.cl.group.execute);
  p = run({"message", "find", "--topic", "pay", "--key", "", "--limit", "5"});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_TRUE(p.cl.message.by_key); // an empty key is a key
  EXPECT_EQ(p.cl.message.limit.value, 5u);
  p = run({"topic", "alter", "t", "--retention", "72h", "--retention-bytes",
           "1GiB"});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_EQ(p.cl.topic.retention_ms.value, 72 * 3600 * 1000ull);
  EXPECT_EQ(p.cl.topic.retention_bytes.value, 1ull << 30);
  EXPECT_FALSE(p.cl.topic.partitions.given);
}

TEST(CommandLineTest, TimesAreIsoDatesRelativeOrEpochMilliseconds) {
  const int64_t now = 1796722200000; // 2026-12-08T09:30:00Z
  struct ok {
    const char* text;
    int64_t ms;
  };
  for (const auto& c : std::vector<ok>{
         {"2026-12-08T09:30:00Z", now},
         {"2026-12-08T09:30:00.250Z", now + 250},
         {"2026-12-08T09:30", now},
         {"2026-12-08 09:30:00", now},
         {"2026-12-08T10:30:00+01:00", now},
         {"2026-12-08T04:00-0530", now},
         {"2026-12-08", now - (9 * 3600 + 30 * 60) * 1000ll},
         {"2024-02-29T00:00:00Z", 1709164800000},
         {"1970-01-01", 0},
         {"now", now},
         {"now-1h", now - 3600000},
         {"now-90s", now - 90000},
         {"1796722200000", now},
       }) {
    int64_t out = -1;
    EXPECT_TRUE(parse_time_ms(c.text, now, out)) << c.text;
    EXPECT_EQ(out, c.ms) << c.text;
  }
  for (const char* bad :
       {"", "yesterday", "2026-13-01", "2026-02-30", "2025-02-29",
        "2026-12-08T24:00", "2026-12-08T09:60", "2026-12-08T09:30:00X",
        "2026-12-08T09:30+1", "2026-12-8", "now-", "now-1x", "now+1h",
        "-1h", "12:00", "2026-12-08T09:30:00.Z", "2026", "20261208"}) {
    int64_t out = 7;
    EXPECT_FALSE(parse_time_ms(bad, now, out)) << bad;
  }
}

TEST(CommandLineTest, ABenchmarkGetsEveryWordAfterItsName) {
  auto p = run({"bench", "txmsg", "--count", "5", "-h", "--", "x"});
  ASSERT_EQ(p.rc, -1) << p.err;
  EXPECT_EQ(p.cl.path, (strings{"bench", "txmsg"}));
  EXPECT_EQ(p.cl.bench.args, (strings{"--count", "5", "-h", "--", "x"}));
  auto dashes = run({"bench", "saga", "--", "--window", "8"});
  ASSERT_EQ(dashes.rc, -1) << dashes.err;
  EXPECT_EQ(dashes.cl.bench.args, (strings{"--", "--window", "8"}));
  auto help = run({"bench", "disk", "--help"});
  ASSERT_EQ(help.rc, -1) << help.err;
  EXPECT_EQ(help.cl.bench.args, strings{"--help"});
  auto none = run({"bench", "saga"});
  ASSERT_EQ(none.rc, -1) << none.err;
  EXPECT_TRUE(none.cl.bench.args.empty());
  auto unknown = run({"bench", "txmgs"});
  EXPECT_EQ(unknown.rc, exit_usage);
  EXPECT_TRUE(has(unknown.err, "did you mean 'txmsg'?")) << unknown.err;
}

} // namespace
} // namespace edda::cli
