#include "storage/environment.hpp"

#include "base/errc.hpp"
#include "base/failpoint.hpp"
#include "base/log.hpp"
#include "records.pb.h"

#include <lmdb.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace edda::storage {

namespace {

const char* names[db_count] = {"meta",    "topics", "log",     "offsets",
                               "delay",   "dlq",    "dedup",   "half",
                               "txn_due", "saga",   "saga_log"};

caf::error lmdb_error(int rc, const std::string& what) {
  if (rc == MDB_MAP_FULL)
    return make_error(errc::storage_full,
                      "LMDB map full during " + what
                        + ": writes stopped, nothing was lost; raise "
                          "storage.map_size and restart the node");
  return make_error(errc::storage_error,
                    what + ": " + mdb_strerror(rc));
}

// mkdir -p
bool make_dirs(const std::string& path, std::string& why) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty())
      continue;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
      why = "cannot create " + cur + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    why = path + " is not a directory";
    return false;
  }
  return true;
}

MDB_val val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

} // namespace

const char* db_name(db x) {
  return names[static_cast<unsigned>(x)];
}

caf::expected<std::shared_ptr<environment>>
environment::open(const options& opts) {
  std::string why;
  if (opts.dir.empty())
    return make_error(errc::data_dir_unusable, "data dir is empty");
  if (!make_dirs(opts.dir, why))
    return make_error(errc::data_dir_unusable, why);
  if (::access(opts.dir.c_str(), W_OK | X_OK) != 0)
    return make_error(errc::data_dir_unusable,
                      opts.dir + " is not writable: " + std::strerror(errno));
  std::shared_ptr<environment> self{new environment};
  self->opts_ = opts;
  auto lock_path = opts.dir + "/LOCK";
  self->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (self->lock_fd_ < 0)
    return make_error(errc::data_dir_unusable,
                      "cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(self->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    auto n = ::pread(self->lock_fd_, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
    while (!holder.empty() && (holder.back() == '\n'))
      holder.pop_back();
    return make_error(errc::data_dir_locked,
                      opts.dir + " is in use by another edda node (pid "
                        + holder + ")");
  }
  auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(self->lock_fd_, 0) != 0
      || ::pwrite(self->lock_fd_, pid.data(), pid.size(), 0) < 0)
    EDDA_WARN("storage", "cannot record pid in " << lock_path);
  int rc = mdb_env_create(&self->env_);
  if (rc != 0)
    return lmdb_error(rc, "mdb_env_create");
  if ((rc = mdb_env_set_mapsize(self->env_, opts.map_size)) != 0
      || (rc = mdb_env_set_maxdbs(self->env_, db_count + 4)) != 0)
    return lmdb_error(rc, "mdb_env_set_mapsize");
  unsigned flags = MDB_NOTLS;
  if (opts.mode == config::durability::nometasync)
    flags |= MDB_NOMETASYNC;
  else if (opts.mode == config::durability::nosync)
    flags |= MDB_NOSYNC;
  rc = mdb_env_open(self->env_, opts.dir.c_str(), flags, 0644);
  if (rc != 0) {
    if (rc == EACCES || rc == EROFS)
      return make_error(errc::data_dir_unusable,
                        opts.dir + ": " + mdb_strerror(rc));
    return lmdb_error(rc, "mdb_env_open " + opts.dir);
  }
  int dead = 0;
  mdb_reader_check(self->env_, &dead);
  self->max_key_ = static_cast<size_t>(mdb_env_get_maxkeysize(self->env_));
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(self->env_, nullptr, 0, &txn)) != 0)
    return lmdb_error(rc, "begin");
  for (unsigned i = 0; i < db_count; ++i) {
    MDB_dbi dbi = 0;
    if ((rc = mdb_dbi_open(txn, names[i], MDB_CREATE, &dbi)) != 0) {
      mdb_txn_abort(txn);
      return lmdb_error(rc, std::string("open db ") + names[i]);
    }
    self->dbis_[i] = dbi;
  }
  if ((rc = mdb_txn_commit(txn)) != 0)
    return lmdb_error(rc, "commit");
  return self;
}

environment::~environment() {
  if (env_ != nullptr)
    mdb_env_close(env_);
  if (lock_fd_ >= 0)
    ::close(lock_fd_); // releases the flock
}

read_txn environment::read() const {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  EDDA_ASSERT(rc == 0, std::string("read txn: ") + mdb_strerror(rc));
  return read_txn{this, txn};
}

caf::error
environment::apply(const std::vector<const wire::v1::WriteBatch*>& batches,
                   std::vector<caf::error>& failed) {
  failed.assign(batches.size(), caf::error{});
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc != 0)
    return lmdb_error(rc, "begin write");
  for (size_t b = 0; b < batches.size(); ++b) {
    // Reject a bad batch on its own, before any of its ops is applied.
    bool ok = true;
    for (const auto& op : batches[b]->ops()) {
      if (op.db() >= db_count
          || (op.kind() != wire::v1::WriteOp::DEL_PREFIX
              && (op.key().empty() || op.key().size() > max_key_))) {
        failed[b] = make_error(errc::invalid_argument,
                               "write op with bad db or key size "
                                 + std::to_string(op.key().size()));
        ok = false;
        break;
      }
    }
    if (!ok)
      continue;
    for (const auto& op : batches[b]->ops()) {
      auto dbi = dbis_[op.db()];
      auto k = val(op.key());
      switch (op.kind()) {
        case wire::v1::WriteOp::PUT: {
          auto v = val(op.value());
          rc = mdb_put(txn, dbi, &k, &v, 0);
          break;
        }
        case wire::v1::WriteOp::DEL:
          rc = mdb_del(txn, dbi, &k, nullptr);
          if (rc == MDB_NOTFOUND)
            rc = 0;
          break;
        case wire::v1::WriteOp::DEL_PREFIX: {
          MDB_cursor* cur = nullptr;
          rc = mdb_cursor_open(txn, dbi, &cur);
          if (rc != 0)
            break;
          // Re-seek after each delete: simple, and immune to LMDB's
          // cursor-after-delete subtleties.
          MDB_val ck, cv;
          for (;;) {
            ck = k;
            int r = op.key().empty()
                      ? mdb_cursor_get(cur, &ck, &cv, MDB_FIRST)
                      : mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE);
            if (r != 0)
              break;
            std::string_view key{static_cast<const char*>(ck.mv_data),
                                 ck.mv_size};
            if (key.substr(0, op.key().size()) != op.key())
              break;
            if ((rc = mdb_cursor_del(cur, 0)) != 0)
              break;
          }
          mdb_cursor_close(cur);
          break;
        }
        default:
          rc = EINVAL;
      }
      if (rc != 0) {
        mdb_txn_abort(txn);
        return lmdb_error(rc, std::string("write to ") + names[op.db()]);
      }
    }
  }
  EDDA_FAILPOINT("storage.before_commit");
  rc = mdb_txn_commit(txn);
  if (rc != 0)
    return lmdb_error(rc, "commit");
  EDDA_FAILPOINT("storage.after_commit");
  return caf::none;
}

caf::expected<uint64_t> environment::copy_to(const std::string& dir,
                                             bool compact) const {
  namespace fs = std::filesystem;
  static std::atomic<bool> busy{false};
  if (busy.exchange(true))
    return make_error(errc::unavailable,
                      "a backup is running: one at a time, try again later");
  struct release {
    ~release() {
      busy = false;
    }
  } guard;
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  if (ec || !p.has_parent_path())
    return make_error(errc::invalid_argument, "no backup dir '" + dir + "'");
  auto root = p.parent_path();
  fs::create_directories(root, ec);
  if (ec)
    return make_error(errc::invalid_argument, "cannot create '" + root.string()
                                                + "': " + ec.message());
  // Room for the copy: the live pages and a margin.
  struct statvfs vfs {};
  if (::statvfs(root.c_str(), &vfs) == 0) {
    auto free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    auto need = live_bytes() / 10 * 11;
    if (free_bytes < need)
      return make_error(errc::storage_error,
                        "not enough room in " + root.string() + " for a backup: "
                          + std::to_string(free_bytes >> 20) + " MiB free, "
                          + std::to_string(need >> 20) + " MiB needed");
  }
  if (::mkdir(p.c_str(), 0700) != 0)
    return make_error(errc::invalid_argument,
                      errno == EEXIST ? "a backup named '" + p.filename().string()
                                          + "' exists in " + root.string()
                                      : "cannot create '" + p.string()
                                          + "': " + std::strerror(errno));
  // Written as data.mdb.partial (this call's own file), renamed once synced:
  // a data.mdb in a backup dir is always whole.
  auto partial = (p / "data.mdb.partial").string();
  auto file = (p / "data.mdb").string();
  int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  int rc = fd < 0 ? errno : 0;
  if (rc == 0)
    rc = mdb_env_copyfd2(env_, fd, compact ? MDB_CP_COMPACT : 0);
  if (rc == 0 && ::fsync(fd) != 0)
    rc = errno;
  if (fd >= 0)
    ::close(fd);
  if (rc == 0 && ::rename(partial.c_str(), file.c_str()) != 0)
    rc = errno;
  if (rc != 0) {
    ::unlink(partial.c_str());
    ::rmdir(p.c_str());
    return make_error(errc::storage_error, "backup to '" + p.string()
                                             + "' failed: " + mdb_strerror(rc));
  }
  for (auto* d : {&p, &root}) { // the rename and the new dir, durable
    int dfd = ::open(d->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void) ::fsync(dfd);
      ::close(dfd);
    }
  }
  auto size = fs::file_size(file, ec);
  return ec ? uint64_t{0} : static_cast<uint64_t>(size);
}

uint64_t environment::live_bytes() const {
  MDB_txn* txn = nullptr;
  if (mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn) != 0)
    return map_used();
  uint64_t pages = 2; // the meta pages
  auto add = [&](MDB_dbi dbi) {
    MDB_stat st{};
    if (mdb_stat(txn, dbi, &st) == 0)
      pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
  };
  add(0); // FREE_DBI
  add(1); // MAIN_DBI: the names of the databases
  for (auto dbi : dbis_)
    add(dbi);
  mdb_txn_abort(txn);
  MDB_stat env_stat{};
  mdb_env_stat(env_, &env_stat);
  return pages * env_stat.ms_psize;
}

uint64_t environment::map_used() const {
  MDB_envinfo info{};
  MDB_stat st{};
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &st);
  return static_cast<uint64_t>(info.me_last_pgno + 1) * st.ms_psize;
}

// -- read_txn -----------------------------------------------------------------

read_txn::read_txn(const environment* env, MDB_txn* txn)
  : env_(env), txn_(txn) {
}

read_txn::read_txn(read_txn&& other) noexcept
  : env_(other.env_), txn_(other.txn_) {
  other.txn_ = nullptr;
}

read_txn::~read_txn() {
  if (txn_ != nullptr)
    mdb_txn_abort(txn_);
}

std::optional<std::string_view> read_txn::get(db d, std::string_view key) {
  auto k = val(key);
  MDB_val v;
  if (mdb_get(txn_, env_->dbi(d), &k, &v) != 0)
    return std::nullopt;
  return std::string_view{static_cast<const char*>(v.mv_data), v.mv_size};
}

void read_txn::scan(
  db d, std::string_view from, std::string_view prefix,
  const std::function<bool(std::string_view, std::string_view)>& fn) {
  MDB_cursor* cur = nullptr;
  if (mdb_cursor_open(txn_, env_->dbi(d), &cur) != 0)
    return;
  auto start = from.empty() ? prefix : from;
  MDB_val k = val(start), v;
  int rc = start.empty() ? mdb_cursor_get(cur, &k, &v, MDB_FIRST)
                         : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    std::string_view key{static_cast<const char*>(k.mv_data), k.mv_size};
    if (key.substr(0, prefix.size()) != prefix)
      break;
    if (!fn(key, {static_cast<const char*>(v.mv_data), v.mv_size}))
      break;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
}

std::optional<std::string> read_txn::last_key(db d, std::string_view prefix) {
  // Position after the prefix range, then step back one.
  std::string upper{prefix};
  while (!upper.empty() && static_cast<uint8_t>(upper.back()) == 0xff)
    upper.pop_back();
  MDB_cursor* cur = nullptr;
  if (mdb_cursor_open(txn_, env_->dbi(d), &cur) != 0)
    return std::nullopt;
  MDB_val k, v;
  int rc;
  if (upper.empty()) {
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  } else {
    upper.back() = static_cast<char>(static_cast<uint8_t>(upper.back()) + 1);
    k = val(upper);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                 : mdb_cursor_get(cur, &k, &v, MDB_LAST);
  }
  std::optional<std::string> out;
  if (rc == 0) {
    std::string_view key{static_cast<const char*>(k.mv_data), k.mv_size};
    if (key.substr(0, prefix.size()) == prefix)
      out.emplace(key);
  }
  mdb_cursor_close(cur);
  return out;
}

} // namespace edda::storage
