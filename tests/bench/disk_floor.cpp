// The disk floor: what one fsync'd LMDB commit costs on this machine, as a
// yardstick for the sync phase (one message in flight) and for batching.
#include "harness.hpp"

#include <lmdb.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>

namespace edda::bench {

namespace {

std::string key_for(uint64_t i) {
  char buf[22];
  std::snprintf(buf, sizeof buf, "k%020llu", static_cast<unsigned long long>(i));
  return std::string(buf, 21);
}

} // namespace

disk_floor measure_disk_floor(const std::string& dir, int single_commits,
                              int batch_commits) {
  disk_floor out;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    out.error = "cannot create " + dir + ": " + ec.message();
    return out;
  }
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_mapsize(env, size_t{1} << 30);
  if (int rc = mdb_env_open(env, dir.c_str(), 0, 0644); rc != 0) {
    out.error = std::string("mdb_env_open: ") + mdb_strerror(rc);
    mdb_env_close(env);
    return out;
  }
  MDB_dbi dbi;
  {
    MDB_txn* txn;
    mdb_txn_begin(env, nullptr, 0, &txn);
    mdb_dbi_open(txn, nullptr, 0, &dbi);
    mdb_txn_commit(txn);
  }
  std::string value(256, 'v');
  uint64_t next = 0;
  auto commit = [&](int puts) -> int {
    MDB_txn* txn;
    if (int rc = mdb_txn_begin(env, nullptr, 0, &txn); rc != 0)
      return rc;
    for (int i = 0; i < puts; ++i) {
      auto k = key_for(next++);
      MDB_val mk{k.size(), k.data()};
      MDB_val mv{value.size(), value.data()};
      if (int rc = mdb_put(txn, dbi, &mk, &mv, 0); rc != 0) {
        mdb_txn_abort(txn);
        return rc;
      }
    }
    return mdb_txn_commit(txn);
  };
  samples single;
  single.reserve(static_cast<size_t>(single_commits));
  for (int i = 0; i < single_commits && out.error.empty(); ++i) {
    auto t0 = mono_ns();
    if (int rc = commit(1); rc != 0)
      out.error = std::string("commit: ") + mdb_strerror(rc);
    single.add(mono_ns() - t0);
  }
  auto t0 = mono_ns();
  for (int i = 0; i < batch_commits && out.error.empty(); ++i)
    if (int rc = commit(100); rc != 0)
      out.error = std::string("commit: ") + mdb_strerror(rc);
  auto elapsed = static_cast<double>(mono_ns() - t0) / 1e9;
  mdb_env_close(env);
  std::filesystem::remove_all(dir, ec);
  out.single_put_p50_ms = single.percentile_ms(0.5);
  out.single_put_p99_ms = single.percentile_ms(0.99);
  if (elapsed > 0)
    out.batch_puts_per_s = batch_commits * 100.0 / elapsed;
  return out;
}

std::string line(const disk_floor& d) {
  if (!d.error.empty())
    return "disk floor: FAILED: " + d.error;
  std::ostringstream os;
  os << std::fixed << std::setprecision(2)
     << "disk floor: LMDB single-put commit p50 " << d.single_put_p50_ms
     << " ms, p99 " << d.single_put_p99_ms << " ms (fsync); 100-put commits "
     << grouped(d.batch_puts_per_s) << " puts/s";
  return os.str();
}

} // namespace edda::bench
