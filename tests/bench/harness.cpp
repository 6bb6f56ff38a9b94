#include "harness.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

namespace edda::bench {

int64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string make_body(uint64_t seq, int64_t send_ns, size_t size) {
  std::string b(std::max<size_t>(size, 16), 'x');
  std::memcpy(b.data(), &seq, 8);
  std::memcpy(b.data() + 8, &send_ns, 8);
  return b;
}

bool read_body(std::string_view body, uint64_t& seq, int64_t& send_ns) {
  if (body.size() < 16)
    return false;
  std::memcpy(&seq, body.data(), 8);
  std::memcpy(&send_ns, body.data() + 8, 8);
  return true;
}

void receipts::add(uint64_t seq) {
  ++received_;
  if (seq >= seen_.size()) {
    ++foreign_;
    return;
  }
  if (seen_[seq]++ == 0)
    ++distinct_;
}

double samples::percentile_ms(double q) {
  if (ns_.empty())
    return 0;
  if (!sorted_) {
    std::sort(ns_.begin(), ns_.end());
    sorted_ = true;
  }
  auto idx = static_cast<size_t>(std::ceil(q * static_cast<double>(ns_.size())));
  idx = std::min(ns_.size() - 1, idx == 0 ? 0 : idx - 1);
  return static_cast<double>(ns_[idx]) / 1e6;
}

const char* to_string(phase_kind k) {
  switch (k) {
    case phase_kind::throughput: return "throughput";
    case phase_kind::latency: return "latency";
    default: return "sync";
  }
}

std::vector<phase_spec> standard_phases(const options& o,
                                        const std::string& topic_prefix,
                                        bool transactional) {
  std::vector<phase_spec> out;
  auto add = [&](phase_kind k, uint64_t n, uint64_t window, double rate) {
    phase_spec s;
    s.kind = k;
    s.topic = topic_prefix + (transactional ? "-txn-" : "-plain-") + to_string(k);
    s.n = n;
    s.window = window;
    s.rate = rate;
    s.size = o.size;
    s.transactional = transactional;
    out.push_back(s);
  };
  add(phase_kind::throughput, o.n, o.window, 0);
  add(phase_kind::latency, o.latency_n, o.window, o.latency_rate);
  add(phase_kind::sync, o.sync_n, 1, 0);
  return out;
}

bool parse_positive(const std::string& name, const std::string& value,
                    uint64_t& out, std::string& err) {
  try {
    size_t used = 0;
    out = std::stoull(value, &used);
    if (used == value.size() && !value.empty() && value[0] != '-' && out > 0)
      return true;
  } catch (...) {
  }
  err = name + " takes a positive integer, got '" + value + "'";
  return false;
}

int parse_load_option(const std::vector<std::string>& argv, size_t& i,
                      options& o, std::string& err) {
  const auto& a = argv[i];
  uint64_t* target = a == "--count"           ? &o.n
                     : a == "--window"        ? &o.window
                     : a == "--latency-count" ? &o.latency_n
                     : a == "--sync-count"    ? &o.sync_n
                                              : nullptr;
  bool size = a == "--size", rate = a == "--latency-rate";
  if (target == nullptr && !size && !rate)
    return 0;
  if (i + 1 >= argv.size()) {
    err = a + " needs a value";
    return -1;
  }
  uint64_t x = 0;
  if (!parse_positive(a, argv[++i], x, err))
    return -1;
  if (size)
    o.size = std::max<uint64_t>(x, 16);
  else if (rate)
    o.latency_rate = static_cast<double>(x);
  else
    *target = x;
  return 1;
}

void pacer::wait(uint64_t i) const {
  if (rate_ <= 0)
    return;
  auto due = start_ + static_cast<int64_t>(static_cast<double>(i) * 1e9 / rate_);
  for (;;) {
    auto now = mono_ns();
    if (now >= due)
      return;
    auto left = due - now;
    timespec ts{static_cast<time_t>(left / 1000000000),
                static_cast<long>(left % 1000000000)};
    nanosleep(&ts, nullptr);
  }
}

std::string encode(const report& r) {
  std::string out;
  for (auto& [k, v] : r) {
    out += k;
    out += '=';
    for (char c : v)
      out += c == '\n' ? ' ' : c;
    out += '\n';
  }
  out += "end\n";
  return out;
}

double num(const report& r, const std::string& key, double fallback) {
  auto i = r.find(key);
  if (i == r.end())
    return fallback;
  try {
    return std::stod(i->second);
  } catch (...) {
    return fallback;
  }
}

namespace {

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    auto n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    off += static_cast<size_t>(n);
  }
}

struct child {
  pid_t pid = -1;
  int fd = -1;
  std::string buf;
  report rep;
  bool ready = false, done = false, eof = false;
};

child spawn(const phase_spec& spec, const child_main& fn) {
  int fds[2];
  if (pipe(fds) != 0)
    return {};
  std::fflush(nullptr);
  auto pid = fork();
  if (pid == 0) {
    ::close(fds[0]);
    int out = fds[1];
    report r;
    try {
      r = fn(spec, [out] { write_all(out, "ready\n"); });
    } catch (const std::exception& e) {
      r["error"] = e.what();
    }
    write_all(out, encode(r));
    std::fflush(nullptr);
    _exit(0);
  }
  ::close(fds[1]);
  child c;
  c.pid = pid;
  c.fd = fds[0];
  return c;
}

/// Reads what `c` has written; parses complete lines.
void pump(child& c) {
  char tmp[4096];
  auto n = ::read(c.fd, tmp, sizeof tmp);
  if (n <= 0) {
    if (n == 0 || errno != EINTR)
      c.eof = true;
    return;
  }
  c.buf.append(tmp, static_cast<size_t>(n));
  size_t pos;
  while ((pos = c.buf.find('\n')) != std::string::npos) {
    auto l = c.buf.substr(0, pos);
    c.buf.erase(0, pos + 1);
    if (l == "ready")
      c.ready = true;
    else if (l == "end")
      c.done = true;
    else if (auto eq = l.find('='); eq != std::string::npos)
      c.rep[l.substr(0, eq)] = l.substr(eq + 1);
  }
}

/// Waits until `pred` holds, reading from every child; false on timeout or
/// when a child went away early.
template <class Pred>
bool wait_for(std::vector<child*> cs, int64_t deadline_ns, Pred pred) {
  while (!pred()) {
    std::vector<pollfd> pfds;
    for (auto* c : cs)
      if (!c->eof)
        pfds.push_back(pollfd{c->fd, POLLIN, 0});
    if (pfds.empty())
      return pred();
    auto left_ms = (deadline_ns - mono_ns()) / 1000000;
    if (left_ms <= 0)
      return false;
    if (poll(pfds.data(), pfds.size(), static_cast<int>(std::min<int64_t>(left_ms, 1000))) < 0
        && errno != EINTR)
      return false;
    for (auto* c : cs)
      if (!c->eof)
        for (auto& p : pfds)
          if (p.fd == c->fd && (p.revents & (POLLIN | POLLHUP)))
            pump(*c);
  }
  return true;
}

void reap(child& c, bool kill_it) {
  if (c.pid <= 0)
    return;
  if (kill_it)
    ::kill(c.pid, SIGKILL);
  int status = 0;
  waitpid(c.pid, &status, 0);
  if (c.fd >= 0)
    ::close(c.fd);
  c.pid = -1;
}

} // namespace

phase_result run_phase(const std::string& system, const phase_spec& spec,
                       const child_main& consumer, const child_main& producer,
                       int timeout_s) {
  phase_result r;
  r.system = system;
  r.mode = spec.transactional ? "transactional" : "plain";
  r.spec = spec;
  auto deadline = mono_ns() + static_cast<int64_t>(timeout_s) * 1000000000;
  auto cons = spawn(spec, consumer);
  if (cons.pid < 0) {
    r.error = "fork failed";
    return r;
  }
  if (!wait_for({&cons}, deadline, [&] { return cons.ready || cons.done; })
      || !cons.ready) {
    r.error = cons.rep.count("error") ? "consumer: " + cons.rep["error"]
                                      : "consumer did not start";
    reap(cons, true);
    return r;
  }
  auto prod = spawn(spec, producer);
  bool ok = wait_for({&cons, &prod}, deadline,
                     [&] { return cons.done && prod.done; });
  reap(prod, !prod.done);
  reap(cons, !cons.done);
  if (prod.rep.count("error"))
    r.error = "producer: " + prod.rep["error"];
  else if (cons.rep.count("error"))
    r.error = "consumer: " + cons.rep["error"];
  else if (!ok)
    r.error = "timed out after " + std::to_string(timeout_s) + " s";
  auto first = num(prod.rep, "first_send_ns");
  auto prod_last = num(prod.rep, "last_ack_ns");
  auto cons_last = num(cons.rep, "last_ack_ns");
  auto n = static_cast<double>(spec.n);
  if (prod_last > first)
    r.producer_rate = n / ((prod_last - first) / 1e9);
  if (cons_last > first)
    r.e2e_rate = n / ((cons_last - first) / 1e9);
  if (spec.kind == phase_kind::sync) {
    r.p50_ms = num(prod.rep, "ack_p50_ms");
    r.p99_ms = num(prod.rep, "ack_p99_ms");
  } else {
    r.p50_ms = num(cons.rep, "p50_ms");
    r.p99_ms = num(cons.rep, "p99_ms");
  }
  auto acked = num(prod.rep, "acked");
  auto failed = num(prod.rep, "failed");
  auto received = num(cons.rep, "received");
  auto distinct = num(cons.rep, "distinct");
  auto dups = num(cons.rep, "duplicates");
  auto foreign = num(cons.rep, "foreign");
  r.exactly_once = r.error.empty() && acked == n && failed == 0
                   && distinct == n && dups == 0 && foreign == 0
                   && received == n;
  std::ostringstream check;
  if (r.exactly_once) {
    check << "each of " << spec.n << " arrived exactly once";
  } else {
    check << "NOT exactly once: acked " << acked << ", failed " << failed
          << ", received " << received << " (" << distinct << " distinct, "
          << dups << " duplicates, " << foreign << " foreign, "
          << (n - distinct) << " missing)";
    if (prod.rep.count("first_error"))
      check << "; first producer error: " << prod.rep["first_error"];
  }
  r.check = check.str();
  return r;
}

std::string grouped(double x) {
  auto v = static_cast<long long>(std::llround(x));
  auto s = std::to_string(v < 0 ? -v : v);
  std::string out;
  int count = 0;
  for (auto i = s.rbegin(); i != s.rend(); ++i) {
    if (count > 0 && count % 3 == 0)
      out.insert(out.begin(), ',');
    out.insert(out.begin(), *i);
    ++count;
  }
  return v < 0 ? "-" + out : out;
}

namespace {

std::string ms(double x) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(x < 10 ? 2 : 1) << x;
  return os.str();
}

} // namespace

std::string line(const phase_result& r) {
  std::ostringstream os;
  os << r.system << " " << r.mode << " " << to_string(r.spec.kind) << ": ";
  if (!r.error.empty()) {
    os << "FAILED: " << r.error;
    return os.str();
  }
  switch (r.spec.kind) {
    case phase_kind::throughput:
      os << "producer " << grouped(r.producer_rate) << " msg/s, end-to-end "
         << grouped(r.e2e_rate) << " msg/s (" << r.spec.n << " x "
         << r.spec.size << " B, window " << r.spec.window << ")";
      break;
    case phase_kind::latency:
      os << "p50 " << ms(r.p50_ms) << " ms, p99 " << ms(r.p99_ms)
         << " ms send to receive (" << r.spec.n << " at "
         << grouped(r.spec.rate) << " msg/s)";
      break;
    case phase_kind::sync:
      os << grouped(r.producer_rate) << " msg/s, p50 " << ms(r.p50_ms) << " ms, p99 "
         << ms(r.p99_ms) << " ms send to durable ack (" << r.spec.n
         << ", one in flight)";
      break;
  }
  os << "; " << r.check;
  return os.str();
}

void print_table(std::ostream& os, const std::vector<phase_result>& rs) {
  os << "\n| system | mode | phase | producer msg/s | end-to-end msg/s | "
        "p50 ms | p99 ms | exactly once |\n"
        "|---|---|---|---:|---:|---:|---:|---|\n";
  for (auto& r : rs) {
    os << "| " << r.system << " | " << r.mode << " | " << to_string(r.spec.kind)
       << " | ";
    if (!r.error.empty()) {
      os << "failed | | | | " << r.error << " |\n";
      continue;
    }
    bool tp = r.spec.kind == phase_kind::throughput;
    bool sync = r.spec.kind == phase_kind::sync;
    os << (tp || sync ? grouped(r.producer_rate) : "") << " | "
       << (tp ? grouped(r.e2e_rate) : "") << " | "
       << (tp ? "" : ms(r.p50_ms)) << " | " << (tp ? "" : ms(r.p99_ms))
       << " | " << (r.exactly_once ? "yes" : "NO") << " |\n";
  }
}

void append_csv(const std::string& path, const std::vector<phase_result>& rs) {
  bool fresh = !std::ifstream(path).good();
  std::ofstream out(path, std::ios::app);
  if (fresh)
    out << "system,mode,phase,n,producer_msg_s,e2e_msg_s,p50_ms,p99_ms,"
           "exactly_once\n";
  for (auto& r : rs)
    out << r.system << "," << r.mode << "," << to_string(r.spec.kind) << ","
        << r.spec.n << "," << std::llround(r.producer_rate) << ","
        << std::llround(r.e2e_rate) << "," << r.p50_ms << "," << r.p99_ms
        << "," << (r.exactly_once ? "yes" : "no") << "\n";
}

uint64_t status_kib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string l;
  auto prefix = field + ":";
  while (std::getline(in, l))
    if (l.rfind(prefix, 0) == 0)
      return std::stoull(l.substr(prefix.size()));
  return 0;
}

uint64_t peak_rss_kib(pid_t pid) {
  return status_kib(pid, "VmHWM");
}

} // namespace edda::bench
