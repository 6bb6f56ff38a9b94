// A node that cannot start says why and exits within a second; SIGTERM stops
// a node at every moment of its life, also while its start hangs.
#include "node_process.hpp"

namespace edda::fault {
namespace {

class NodeLifecycleTest : public NodeFixture {
protected:
  NodeLifecycleTest() : NodeFixture("edda-lifecycle", {"node.stop_grace=2s"}) {
  }
};

/// A listening socket on 127.0.0.1:port, closed at the end.
struct listener {
  int fd = -1;
  explicit listener(uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0
        || ::listen(fd, 4) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~listener() {
    if (fd >= 0)
      ::close(fd);
  }
};

TEST_F(NodeLifecycleTest, PortInUseIsReportedAndTheNodeExitsWithinASecond) {
  listener taken{port_};
  ASSERT_GE(taken.fd, 0) << "could not occupy port " << port_;
  auto t0 = clock_type::now();
  auto& n = start_node(data_dir_, port_);
  ASSERT_TRUE(wait_exit(n, seconds(5))) << "the node still runs";
  auto took = ch::duration_cast<milliseconds>(clock_type::now() - t0);
  EXPECT_LT(took.count(), 1000) << "exit took " << took.count() << " ms";
  EXPECT_TRUE(n.exited_nonzero()) << n.describe_status();
  auto log = read_file(n.log_path);
  EXPECT_NE(log.find("cannot listen on 127.0.0.1:" + std::to_string(port_)),
            std::string::npos)
    << log;
  EXPECT_NE(log.find("Address already in use"), std::string::npos) << log;
}

TEST_F(NodeLifecycleTest, SigtermStopsARunningNodeCleanly) {
  auto& n = start_listening_node();
  ASSERT_GT(n.pid, 0);
  auto t0 = clock_type::now();
  ::kill(n.pid, SIGTERM);
  ASSERT_TRUE(wait_exit(n, seconds(5))) << "SIGTERM was ignored";
  auto took = ch::duration_cast<milliseconds>(clock_type::now() - t0);
  EXPECT_TRUE(WIFEXITED(n.status) && WEXITSTATUS(n.status) == 0)
    << n.describe_status();
  EXPECT_LT(took.count(), 2000) << "stop took " << took.count() << " ms";
  EXPECT_NE(read_file(n.log_path).find("stopped"), std::string::npos);
}

TEST_F(NodeLifecycleTest, SigtermEndsANodeWhoseStartHangs) {
  auto& n = start_node(data_dir_, port_, "node.before_listen=hang");
  ASSERT_TRUE(eventually(seconds(10), [&] {
    return read_file(n.log_path).find("hanging at node.before_listen")
           != std::string::npos;
  })) << read_file(n.log_path);
  auto t0 = clock_type::now();
  ::kill(n.pid, SIGTERM);
  // node.stop_grace is 2 s: the start cannot finish, so the process ends
  // itself then, saying why.
  ASSERT_TRUE(wait_exit(n, seconds(6))) << "SIGTERM was ignored";
  auto took = ch::duration_cast<milliseconds>(clock_type::now() - t0);
  EXPECT_GE(took.count(), 1800);
  EXPECT_TRUE(n.exited_nonzero()) << n.describe_status();
  EXPECT_NE(read_file(n.log_path).find("did not stop within 2000 ms"),
            std::string::npos)
    << read_file(n.log_path);
}

TEST_F(NodeLifecycleTest, ASecondSignalEndsTheProcessAtOnce) {
  auto& n = start_node(data_dir_, port_, "node.before_listen=hang");
  ASSERT_TRUE(eventually(seconds(10), [&] {
    return read_file(n.log_path).find("hanging at node.before_listen")
           != std::string::npos;
  }));
  ::kill(n.pid, SIGTERM);
  ASSERT_TRUE(eventually(seconds(5), [&] {
    return read_file(n.log_path).find("signal 15 received")
           != std::string::npos;
  }));
  std::this_thread::sleep_for(milliseconds(1100)); // not a duplicate
  auto t0 = clock_type::now();
  ::kill(n.pid, SIGINT);
  ASSERT_TRUE(wait_exit(n, seconds(1)));
  auto took = ch::duration_cast<milliseconds>(clock_type::now() - t0);
  EXPECT_LT(took.count(), 1000);
  EXPECT_NE(read_file(n.log_path).find("second signal"), std::string::npos);
}

} // namespace
} // namespace edda::fault
