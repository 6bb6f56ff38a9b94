// open_promises: a request taken by an actor that ends before answering is
// answered at once with `unavailable`, not left to the caller's timeout; one
// answered is answered once.
#include "base/errc.hpp"
#include "base/open_promises.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using held_atom = caf::atom_constant<caf::atom("held")>;
using answer_atom = caf::atom_constant<caf::atom("answer")>;

struct holder_state {
  std::shared_ptr<edda::open_promises> open;
  std::vector<edda::open_promises::kept> held;
};

/// Keeps every string request open; `answer` answers the held ones (twice:
/// the second is ignored); `held` says how many are open.
caf::behavior holder(caf::stateful_actor<holder_state>* self) {
  self->state.open = edda::open_promises::attach(self, "holder");
  return {
    [=](const std::string&) -> caf::result<std::string> {
      auto rp = self->make_response_promise<std::string>();
      self->state.held.push_back(self->state.open->keep(rp));
      return rp;
    },
    [=](answer_atom) {
      for (auto& k : self->state.held) {
        k.deliver(std::string{"answered"});
        k.deliver(std::string{"twice"});
      }
      self->state.held.clear();
    },
    [=](held_atom) { return static_cast<int>(self->state.open->size()); },
  };
}

struct outcome {
  std::string reply;
  caf::error err;
  steady::duration took{};
};

/// `n` blocking requests to `a` (30 s timeout each), one thread each.
struct callers {
  callers(caf::actor_system& sys, const caf::actor& a, int n) {
    out.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&sys, a, this, i] {
        caf::scoped_actor self{sys};
        auto t0 = steady::now();
        auto& o = out[static_cast<size_t>(i)];
        self->request(a, 30s, std::string{"req"})
          .receive([&](std::string& s) { o.reply = s; },
                   [&](caf::error& e) { o.err = e; });
        o.took = steady::now() - t0;
      });
  }
  void join() {
    for (auto& t : threads)
      t.join();
  }
  std::vector<outcome> out;
  std::vector<std::thread> threads;
};

int held(caf::actor_system& sys, const caf::actor& a) {
  caf::scoped_actor self{sys};
  int n = -1;
  self->request(a, 5s, held_atom::value)
    .receive([&](int x) { n = x; }, [&](caf::error&) {});
  return n;
}

bool wait_held(caf::actor_system& sys, const caf::actor& a, int n) {
  auto deadline = steady::now() + 10s;
  while (steady::now() < deadline) {
    if (held(sys, a) == n)
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

TEST(open_promises, requests_open_when_the_actor_is_killed_fail_at_once) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto a = sys.spawn(holder);
  callers c(sys, a, 3);
  ASSERT_TRUE(wait_held(sys, a, 3));
  caf::anon_send_exit(a, caf::exit_reason::kill);
  c.join();
  for (auto& o : c.out) {
    EXPECT_TRUE(o.reply.empty());
    EXPECT_EQ(edda::code_of(o.err), edda::errc::unavailable)
      << edda::render(o.err);
    EXPECT_NE(edda::render(o.err).find("holder ended"), std::string::npos)
      << edda::render(o.err);
    EXPECT_NE(edda::render(o.err).find("may or may not have been applied"),
              std::string::npos);
    // Well before the 30 s timeout the caller would otherwise wait.
    EXPECT_LT(o.took, 10s);
  }
}

TEST(open_promises, an_answered_request_is_answered_once_and_not_failed_later) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto a = sys.spawn(holder);
  callers c(sys, a, 2);
  ASSERT_TRUE(wait_held(sys, a, 2));
  caf::anon_send(a, answer_atom::value);
  c.join();
  for (auto& o : c.out) {
    EXPECT_EQ(o.reply, "answered");
    EXPECT_FALSE(o.err) << edda::render(o.err);
  }
  EXPECT_EQ(held(sys, a), 0);
  caf::anon_send_exit(a, caf::exit_reason::kill);
}

} // namespace
