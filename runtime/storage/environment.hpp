// The node's one LMDB environment: opening (with a lock on the data dir),
// the named databases, and short read-only transactions.
//
// Ownership: one `environment` per data dir per process, shared by
// shared_ptr among the actors of a node. Reads may happen from any thread
// (the env is opened with MDB_NOTLS); every write goes through the storage
// writer actor (writer_actor.hpp), which is the only writer.
#pragma once

#include "config/settings.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

struct MDB_env;
struct MDB_txn;

namespace edda::wire::v1 {
class WriteBatch;
} // namespace edda::wire::v1

namespace edda::storage {

/// Named databases. Numbers are part of the wire format of WriteOp.db.
enum class db : uint8_t {
  meta = 0,
  topics = 1,
  log = 2,
  offsets = 3,
  delay = 4,
  dlq = 5,
  dedup = 6,
  half = 7,
  txn_due = 8,
  saga = 9,
  saga_log = 10,
};
inline constexpr unsigned db_count = 11;
[[nodiscard]] const char* db_name(db x);

struct options {
  std::string dir;
  uint64_t map_size = 4ull << 30;
  config::durability mode = config::durability::fsync;
};

/// A short read-only transaction. Values returned are valid until the
/// read_txn is destroyed; never keep one across actor messages.
class read_txn {
public:
  read_txn(read_txn&&) noexcept;
  read_txn& operator=(read_txn&&) = delete;
  ~read_txn();
  /// The value of `key`, or nullopt.
  [[nodiscard]] std::optional<std::string_view> get(db d,
                                                    std::string_view key);
  /// Visits keys >= `from` that start with `prefix`, in order, until `fn`
  /// returns false.
  void scan(db d, std::string_view from, std::string_view prefix,
            const std::function<bool(std::string_view, std::string_view)>& fn);
  /// The greatest key starting with `prefix`, if any.
  [[nodiscard]] std::optional<std::string> last_key(db d,
                                                    std::string_view prefix);

private:
  friend class environment;
  read_txn(const class environment* env, MDB_txn* txn);
  const class environment* env_;
  MDB_txn* txn_;
};

class environment {
public:
  /// Opens (creating if needed) the data dir and its LMDB environment.
  /// Errors: data_dir_unusable (cannot create / not writable, with the OS
  /// reason), data_dir_locked (another process holds it), storage_error.
  [[nodiscard]] static caf::expected<std::shared_ptr<environment>>
  open(const options& opts);

  ~environment();
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;

  [[nodiscard]] const options& opts() const noexcept {
    return opts_;
  }

  /// Starts a read-only transaction (throws nothing; aborts on LMDB
  /// failure to begin a reader, which only happens on corruption).
  [[nodiscard]] read_txn read() const;

  /// Applies the batches in one write transaction and commits it with the
  /// configured durability. `failed[i]` is set for a batch rejected on its
  /// own (bad key); a failure of the transaction itself is returned as the
  /// error and nothing is written. Errors: storage_full (MDB_MAP_FULL),
  /// storage_error. Called only by the writer actor (or single-threaded
  /// tools and tests).
  [[nodiscard]] caf::error apply(const std::vector<const wire::v1::WriteBatch*>& batches,
                                 std::vector<caf::error>& failed);

  /// Writes a consistent copy of the environment (one read transaction;
  /// writers go on, but LMDB holds its write lock while the copy's first
  /// pages are written) as `dir`/data.mdb: `dir` is made (mode 0700, it
  /// must not exist; its parent is created), the copy written as
  /// data.mdb.partial (0600), synced, then renamed, so a data.mdb there is
  /// always whole. One copy at a time in the process; refused without room
  /// for live_bytes() and 10%. `compact` leaves free pages out. Blocks for
  /// as long as the copy takes: call it off the actor threads. Returns the
  /// copy's size. Errors: invalid_argument (the dir), unavailable (another
  /// copy runs), storage_error (no room, or the copy failed: its partial
  /// file and dir are removed).
  [[nodiscard]] caf::expected<uint64_t> copy_to(const std::string& dir,
                                                bool compact) const;

  /// Bytes of the pages the data holds now (every database's branch, leaf
  /// and overflow pages, the free list's own, the two meta pages): what a
  /// full map is measured against, since LMDB reuses freed pages while
  /// map_used() never goes down.
  [[nodiscard]] uint64_t live_bytes() const;

  /// Bytes of the map in use (last page number times page size).
  [[nodiscard]] uint64_t map_used() const;

  [[nodiscard]] unsigned dbi(db d) const noexcept {
    return dbis_[static_cast<unsigned>(d)];
  }
  [[nodiscard]] MDB_env* handle() const noexcept {
    return env_;
  }

private:
  environment() = default;
  options opts_;
  MDB_env* env_ = nullptr;
  unsigned dbis_[db_count] = {};
  int lock_fd_ = -1;
  size_t max_key_ = 511;
};

} // namespace edda::storage
