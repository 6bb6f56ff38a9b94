// greeter: a participant service of the saga type `greet` (a node started
// with --set 'saga.types=["greet = hello!"]'). It connects to the node's
// client door, serves the step `greet.hello`, starts one saga of that type
// with the input {"name": NAME}, waits for it to end and checks that its
// own step produced the step's output, "hello, NAME". Exits 0 when it did,
// 1 otherwise.
//
//   greeter [HOST:PORT] [NAME]     (default 127.0.0.1:7430, world)
#include "base/errc.hpp"
#include "client/admin.hpp"
#include "client/connection.hpp"
#include "sagas/remote.hpp"
#include "sagas/saga.hpp"

#include <atomic>
#include <chrono>
#include <iostream>
#include <string>

using namespace edda;

int main(int argc, char** argv) {
  std::string endpoint = argc > 1 ? argv[1] : "127.0.0.1:7430";
  std::string name = argc > 2 ? argv[2] : "world";
  if (name.empty()
      || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
           != std::string::npos) {
    std::cerr << "greeter: NAME takes letters, digits, _ and -\n";
    return 1;
  }
  // A declared type's input is JSON (the node checks it).
  std::string input = "{\"name\": \"" + name + "\"}";
  std::string host;
  uint16_t port = 0;
  if (!client::parse_endpoint(endpoint, host, port)) {
    std::cerr << "greeter: '" << endpoint << "' is not HOST:PORT\n";
    return 1;
  }
  auto conn = client::connection::open(host, port);
  if (!conn) {
    std::cerr << "greeter: cannot connect to " << endpoint << ": "
              << render(conn.error()) << "\n";
    return 1;
  }

  // The step: called once per attempt, with the saga's input; its output
  // is stored with the step.
  std::atomic<int> calls{0};
  auto hello = [&calls](const sagas::step_request& r) {
    ++calls;
    std::cout << "greeter: step " << r.step << " of saga " << r.saga_id
              << " (attempt " << r.attempt << "), input " << r.input << "\n";
    const std::string key = "\"name\": \"";
    auto at = r.input.find(key);
    auto end = at == std::string::npos ? at : r.input.find('"', at + key.size());
    if (end == std::string::npos) // retrying would not help
      return sagas::step_result::failure("no name in the input", false);
    return sagas::step_result::success(
      "hello, " + r.input.substr(at + key.size(), end - at - key.size()));
  };
  sagas::host_options ho;
  ho.client_id = "greeter";
  auto host_ = sagas::participant_host::start(*conn, {{"greet.hello", hello}},
                                              ho);
  if (!host_) {
    std::cerr << "greeter: cannot serve greet.hello: "
              << render(host_.error()) << "\n";
    return 1;
  }

  // One saga of the type, waited for (the node calls the step above).
  auto started = client::admin::saga_start(*conn, "greet", "", input,
                                           std::chrono::seconds(20));
  if (!started) {
    std::cerr << "greeter: saga_start: " << render(started.error()) << "\n";
    return 1;
  }
  const auto& rec = started->record();
  auto state = static_cast<sagas::saga_state>(rec.state());
  std::string output;
  for (const auto& s : rec.steps())
    if (s.name() == "hello")
      output = s.output();
  std::cout << "greeter: saga " << rec.id() << " " << sagas::to_string(state)
            << ", step output \"" << output << "\", served "
            << (*host_)->served() << "\n";
  bool ok = state == sagas::saga_state::completed
            && output == "hello, " + name && calls.load() >= 1;
  std::cout << (ok ? "greeter: OK\n" : "greeter: FAILED\n");
  return ok ? 0 : 1;
}
