// Linux process primitives Baton's fence keeper and process backend need that the Glibc module
// does not expose (they sit behind _GNU_SOURCE or are variadic), and the fork-to-exec path of a
// backend, which must run only async-signal-safe code and therefore lives in C.
// Never a product: only FenceKeeper's executable and Supervisor import it.
#ifndef C_BATON_PROCESS_H
#define C_BATON_PROCESS_H

#include <stddef.h>
#include <sys/types.h>
#include <spawn.h>
#include <signal.h>
#include <poll.h>
#include <time.h>

/// Where the child failed between fork and exec (see cbp_spawn_backend).
enum cbp_spawn_stage {
    CBP_STAGE_NONE = 0,
    CBP_STAGE_FORK = 1,
    CBP_STAGE_SESSION = 2,
    CBP_STAGE_DEATH_SIGNAL = 3,
    CBP_STAGE_STDIO = 4,
    CBP_STAGE_GROUPS = 5,
    CBP_STAGE_SETGID = 6,
    CBP_STAGE_SETUID = 7,
    CBP_STAGE_CHDIR = 8,
    CBP_STAGE_EXEC = 9,
    CBP_STAGE_PIPE = 10,
};

/// What a backend is started with. Every pointer is owned by the caller.
struct cbp_spawn_request {
    const char *path;          // absolute or relative path of the program (no PATH search)
    char *const *argv;         // NULL-terminated
    char *const *envp;         // NULL-terminated
    const char *cwd;           // NULL: inherit
    int change_ids;            // 0: keep uid/gid/groups
    uid_t uid;                 // used when change_uid != 0
    int change_uid;
    gid_t gid;                 // used when change_ids != 0
    const gid_t *groups;       // supplementary groups, used when change_ids != 0
    size_t group_count;
    int stdout_fd;             // becomes the child's fd 1
    int stderr_fd;             // becomes the child's fd 2
};

/// Forks a backend: the child starts a new session (so it leads its own process group), asks for
/// SIGKILL when the calling process dies, resets signal dispositions and mask, gets /dev/null on
/// stdin and `stdout_fd`/`stderr_fd` on 1/2, closes every other descriptor, switches groups/gid/
/// uid, changes directory and execs. Blocks until the exec happened or failed.
///
/// Returns 0 and the child's pid in `*pid` on success. On failure returns -1 with the stage in
/// `*stage` and the errno in `*error` (the failed child is already reaped).
int cbp_spawn_backend(const struct cbp_spawn_request *request, pid_t *pid, int *stage, int *error);

/// prctl(PR_SET_PDEATHSIG, signal).
int cbp_set_parent_death_signal(int signal);
/// prctl(PR_SET_CHILD_SUBREAPER, 1).
int cbp_set_child_subreaper(void);
/// signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK); returns the descriptor or -1.
int cbp_signalfd(const sigset_t *mask);
/// Reads one signalfd_siginfo; returns the signal number, 0 when none is pending, -1 on error.
int cbp_signalfd_read(int fd);
/// Closes every descriptor >= first (close_range, with a /proc/self/fd fallback).
void cbp_close_from(int first);
/// pipe2(fds, O_CLOEXEC).
int cbp_pipe_cloexec(int fds[2]);
/// ppoll with a relative timeout in nanoseconds (negative: wait forever); signals are not
/// touched (the caller blocks them and uses a signalfd).
int cbp_poll_ns(struct pollfd *fds, nfds_t count, long long timeout_ns);
/// The node's monotonic clock (CLOCK_MONOTONIC) in nanoseconds.
long long cbp_monotonic_ns(void);
/// Blocks `signal` in the calling thread's mask; returns 0 or an errno.
int cbp_block_signals(const sigset_t *mask);
/// Fills `set` with SIGCHLD, SIGTERM, SIGINT and SIGHUP.
void cbp_keeper_signal_set(sigset_t *set);
/// Ignores SIGPIPE.
void cbp_ignore_sigpipe(void);
/// getgrouplist; returns the number of groups or -1 when `*count` was too small (it is updated).
int cbp_group_list(const char *user, gid_t group, gid_t *groups, int *count);
/// WIFEXITED/WEXITSTATUS/WIFSIGNALED/WTERMSIG as plain functions.
int cbp_wifexited(int status);
int cbp_wexitstatus(int status);
int cbp_wifsignaled(int status);
int cbp_wtermsig(int status);

/// Spawns a helper (the fence keeper) with posix_spawn: `stdin_fd`, `stdout_fd` and the optional
/// `fd3`/`fd4` (-1: none) become the child's 0, 1, 3, 4; fd 2 is inherited; every other
/// descriptor is closed; the signal mask is cleared and every disposition reset.
/// Returns 0 or an errno.
int cbp_spawn_helper(const char *path, char *const *argv, char *const *envp,
                     int stdin_fd, int stdout_fd, int fd3, int fd4, pid_t *pid);

#endif
