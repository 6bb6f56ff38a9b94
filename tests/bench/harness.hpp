// harness: the parts of the "txmsg" benchmark that do not depend on the
// system under test, shared by `edda bench txmsg` and the peers (Redis).
//
// A run is a list of phases. Each phase forks a consumer process, waits
// until it is subscribed, forks a producer process, and combines the two
// reports (key=value lines on a pipe) into one phase_result. Timestamps are
// CLOCK_MONOTONIC nanoseconds, which every process on the machine shares.
//
// Message bodies carry their sequence number and send time, so the consumer
// checks exactly-once delivery and measures latency without any other
// channel. No CAF in here: forking is only safe before threads exist.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace edda::bench {

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes).
[[nodiscard]] int64_t mono_ns();

/// A body of `size` bytes (at least 16) starting with `seq` and `send_ns`.
[[nodiscard]] std::string make_body(uint64_t seq, int64_t send_ns, size_t size);
/// Reads what make_body wrote; false for a body that is too short.
bool read_body(std::string_view body, uint64_t& seq, int64_t& send_ns);

/// Counts receipts of sequence numbers 0..n-1.
class receipts {
public:
  explicit receipts(uint64_t n) : seen_(n, 0) {}
  void add(uint64_t seq);
  [[nodiscard]] uint64_t received() const { return received_; }
  [[nodiscard]] uint64_t distinct() const { return distinct_; }
  [[nodiscard]] uint64_t duplicates() const { return received_ - distinct_ - foreign_; }
  [[nodiscard]] uint64_t foreign() const { return foreign_; }
  [[nodiscard]] uint64_t missing() const { return seen_.size() - distinct_; }
  [[nodiscard]] bool complete() const { return distinct_ == seen_.size(); }

private:
  std::vector<uint8_t> seen_;
  uint64_t received_ = 0, distinct_ = 0, foreign_ = 0;
};

/// Latency samples in nanoseconds; percentiles in milliseconds.
class samples {
public:
  void reserve(size_t n) { ns_.reserve(n); }
  void add(int64_t ns) { ns_.push_back(ns); }
  [[nodiscard]] size_t size() const { return ns_.size(); }
  /// q in [0, 1]; 0 when empty. Sorts on first use.
  [[nodiscard]] double percentile_ms(double q);

private:
  std::vector<int64_t> ns_;
  bool sorted_ = false;
};

enum class phase_kind { throughput, latency, sync };
[[nodiscard]] const char* to_string(phase_kind k);

/// What one phase asks of the producer and the consumer.
struct phase_spec {
  phase_kind kind = phase_kind::throughput;
  std::string topic;       ///< fresh per phase
  uint64_t n = 0;          ///< messages
  uint64_t window = 256;   ///< sent but not acknowledged, at most
  double rate = 0;         ///< msg/s, 0 = unpaced
  size_t size = 256;       ///< body bytes
  bool transactional = false;
};

struct options {
  uint64_t n = 50000;         ///< throughput phase
  uint64_t latency_n = 2000;
  double latency_rate = 1000;
  uint64_t sync_n = 5000;
  uint64_t window = 256;
  size_t size = 256;
};

/// A positive integer option value ("--count 5000"); false with `err`.
bool parse_positive(const std::string& name, const std::string& value,
                    uint64_t& out, std::string& err);

/// The options every system takes: --count --window --size --latency-count
/// --latency-rate --sync-count at argv[i]. Returns 1 when it took one (i
/// then points at its value), 0 when argv[i] is some other option, -1 with
/// `err` for a missing or bad value.
int parse_load_option(const std::vector<std::string>& argv, size_t& i,
                      options& o, std::string& err);

/// The three phases of the workload for `topic_prefix`, plain or
/// transactional.
[[nodiscard]] std::vector<phase_spec>
standard_phases(const options& o, const std::string& topic_prefix,
                bool transactional);

/// Paces sends at `rate` msg/s (0 = no pacing): wait() sleeps until send i
/// is due.
class pacer {
public:
  pacer(double rate, int64_t start_ns) : rate_(rate), start_(start_ns) {}
  void wait(uint64_t i) const;

private:
  double rate_;
  int64_t start_;
};

/// A key=value report, one per line on the wire ("end" closes it).
using report = std::map<std::string, std::string>;
[[nodiscard]] std::string encode(const report& r);
[[nodiscard]] double num(const report& r, const std::string& key,
                         double fallback = 0);

/// Runs in a forked child: `out` is where the report goes.
using child_main = std::function<report(const phase_spec&, const std::function<void()>& ready)>;

struct phase_result {
  std::string system;  ///< "edda", "redis"
  std::string mode;    ///< "plain", "transactional"
  phase_spec spec;
  /// n / (first send .. last durable ack): the throughput phase's producer
  /// rate, the sync phase's rate.
  double producer_rate = 0;
  double e2e_rate = 0;      ///< throughput: n / (first send .. consumer's last durable ack)
  double p50_ms = 0, p99_ms = 0;
  bool exactly_once = false;
  std::string check;   ///< "exactly once" or what went wrong
  std::string error;   ///< non-empty when the phase failed
};

/// Forks the consumer, waits for its ready signal, forks the producer, and
/// combines their reports. `timeout_s` bounds the whole phase.
[[nodiscard]] phase_result run_phase(const std::string& system,
                                     const phase_spec& spec,
                                     const child_main& consumer,
                                     const child_main& producer,
                                     int timeout_s = 300);

/// "edda plain throughput: producer 75,012 msg/s, end-to-end 70,100 msg/s
/// (50000 x 256 B, window 256; exactly once)".
[[nodiscard]] std::string line(const phase_result& r);
/// The short table after the lines.
void print_table(std::ostream& os, const std::vector<phase_result>& rs);

/// Appends one CSV row per result to `path` (header when the file is new):
/// system,mode,phase,n,producer_msg_s,e2e_msg_s,p50_ms,p99_ms,exactly_once.
/// The peers script joins these files to print the ratios.
void append_csv(const std::string& path, const std::vector<phase_result>& rs);

/// Peak resident set (VmHWM) of `pid` in KiB, 0 if unknown.
[[nodiscard]] uint64_t peak_rss_kib(pid_t pid);
/// A field of /proc/<pid>/status in KiB ("RssAnon", "RssFile"), 0 if unknown.
[[nodiscard]] uint64_t status_kib(pid_t pid, const std::string& field);

/// "75,012" for 75012.4.
[[nodiscard]] std::string grouped(double x);

} // namespace edda::bench

namespace edda::bench {

/// What the disk allows, measured with LMDB the way edda's storage opens it
/// (fsync on commit), 256-byte values and 21-byte keys.
struct disk_floor {
  double single_put_p50_ms = 0;  ///< one put per commit
  double single_put_p99_ms = 0;
  double batch_puts_per_s = 0;   ///< 100 puts per commit
  std::string error;
};

/// Measures in a fresh environment under `dir` (removed afterwards).
[[nodiscard]] disk_floor measure_disk_floor(const std::string& dir,
                                            int single_commits = 2000,
                                            int batch_commits = 300);
/// "disk floor: LMDB single-put commit p50 0.41 ms, p99 0.80 ms (fsync); 100-put commits 150,000 puts/s".
[[nodiscard]] std::string line(const disk_floor& d);

} // namespace edda::bench
