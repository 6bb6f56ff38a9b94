// Runs the `edda` command as a user would: a child process with stdin
// closed, stdout and stderr captured in files under a directory, killed
// after a deadline. Header-only; the including test passes the binary's
// path (e.g. a compile definition EDDA_BINARY="$<TARGET_FILE:edda>").
#pragma once

#include "support/util.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace edda::test {

struct run_result {
  int exit_code = -1; ///< 128 when killed
  bool timed_out = false;
  std::string out;
  std::string err;
};

/// Runs `binary ARGS...` and waits at most `timeout` (then kills it).
inline run_result run_command(const std::string& binary,
                              const std::vector<std::string>& args,
                              const std::string& dir,
                              std::chrono::milliseconds timeout
                              = std::chrono::milliseconds{20000}) {
  run_result r;
  auto out_path = dir + "/stdout.txt";
  auto err_path = dir + "/stderr.txt";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> all{binary};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, binary.c_str(), &fa, nullptr, argv.data(),
                       environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    r.err = std::string("posix_spawn: ") + std::strerror(rc);
    return r;
  }
  int status = 0;
  if (!eventually(timeout,
                  [&] { return ::waitpid(pid, &status, WNOHANG) == pid; })) {
    r.timed_out = true;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

} // namespace edda::test
