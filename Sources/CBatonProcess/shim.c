#define _GNU_SOURCE
#include "CBatonProcess.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

// Marks every descriptor >= first close-on-exec. Async-signal-safe: used between fork and exec.
static void mark_cloexec_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned int)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) {
        return;
    }
#endif
    long limit = sysconf(_SC_OPEN_MAX);
    if (limit < 0 || limit > 65536) {
        limit = 65536;
    }
    for (int fd = first; fd < limit; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) {
            fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
}

// Tells the parent where the child failed, then exits. Only async-signal-safe calls.
static void child_fail(int report_fd, int stage) {
    int payload[2] = {stage, errno};
    ssize_t written;
    do {
        written = write(report_fd, payload, sizeof payload);
    } while (written < 0 && errno == EINTR);
    _exit(127);
}

int cbp_spawn_backend(const struct cbp_spawn_request *request, pid_t *pid, int *stage, int *error) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        *stage = CBP_STAGE_PIPE;
        *error = errno;
        return -1;
    }
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        *stage = CBP_STAGE_FORK;
        *error = errno;
        close(report[0]);
        close(report[1]);
        return -1;
    }
    if (child == 0) {
        // The child: nothing but async-signal-safe calls until execve.
        struct sigaction defaults;
        memset(&defaults, 0, sizeof defaults);
        defaults.sa_handler = SIG_DFL;
        for (int signal_number = 1; signal_number < NSIG; signal_number++) {
            if (signal_number != SIGKILL && signal_number != SIGSTOP) {
                sigaction(signal_number, &defaults, NULL);
            }
        }
        if (setsid() < 0) {
            child_fail(report[1], CBP_STAGE_SESSION);
        }
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
            child_fail(report[1], CBP_STAGE_DEATH_SIGNAL);
        }
        if (getppid() != parent) {
            // The keeper died before the death signal was armed.
            errno = ESRCH;
            child_fail(report[1], CBP_STAGE_DEATH_SIGNAL);
        }
        int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0) {
            child_fail(report[1], CBP_STAGE_STDIO);
        }
        if (dup2(request->stdout_fd, STDOUT_FILENO) < 0 || dup2(request->stderr_fd, STDERR_FILENO) < 0
            || dup2(null_fd, STDIN_FILENO) < 0) {
            child_fail(report[1], CBP_STAGE_STDIO);
        }
        // dup2 onto the same number keeps the flags: make sure 0-2 survive exec.
        for (int fd = 0; fd <= 2; fd++) {
            int flags = fcntl(fd, F_GETFD);
            if (flags >= 0 && (flags & FD_CLOEXEC)) {
                fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
            }
        }
        mark_cloexec_from(3);
        if (request->change_ids) {
            if (setgroups(request->group_count, request->groups) != 0) {
                child_fail(report[1], CBP_STAGE_GROUPS);
            }
            if (setgid(request->gid) != 0) {
                child_fail(report[1], CBP_STAGE_SETGID);
            }
        }
        if (request->change_uid) {
            if (setuid(request->uid) != 0) {
                child_fail(report[1], CBP_STAGE_SETUID);
            }
        }
        if (request->cwd != NULL && chdir(request->cwd) != 0) {
            child_fail(report[1], CBP_STAGE_CHDIR);
        }
        sigset_t empty;
        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        execve(request->path, request->argv, request->envp);
        child_fail(report[1], CBP_STAGE_EXEC);
    }

    close(report[1]);
    int payload[2] = {0, 0};
    size_t received = 0;
    while (received < sizeof payload) {
        ssize_t count = read(report[0], (char *)payload + received, sizeof payload - received);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count <= 0) {
            break;
        }
        received += (size_t)count;
    }
    close(report[0]);
    if (received == 0) {
        *pid = child;
        return 0;
    }
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
    if (received < sizeof payload) {
        *stage = CBP_STAGE_PIPE;
        *error = EIO;
    } else {
        *stage = payload[0];
        *error = payload[1];
    }
    return -1;
}

int cbp_set_parent_death_signal(int signal_number) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal_number, 0, 0, 0);
}

int cbp_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0, 0, 0);
}

int cbp_signalfd(const sigset_t *mask) {
    return signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

int cbp_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t count;
    do {
        count = read(fd, &info, sizeof info);
    } while (count < 0 && errno == EINTR);
    if (count < 0) {
        return errno == EAGAIN ? 0 : -1;
    }
    if ((size_t)count != sizeof info) {
        return -1;
    }
    return (int)info.ssi_signo;
}

void cbp_close_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned int)first, ~0U, 0U) == 0) {
        return;
    }
#endif
    DIR *directory = opendir("/proc/self/fd");
    if (directory == NULL) {
        return;
    }
    int own = dirfd(directory);
    int pending[256];
    int pending_count = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL && pending_count < 256) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] >= '0' && entry->d_name[0] <= '9' && fd >= first && fd != own) {
            pending[pending_count++] = fd;
        }
    }
    closedir(directory);
    for (int index = 0; index < pending_count; index++) {
        close(pending[index]);
    }
}

int cbp_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int cbp_poll_ns(struct pollfd *fds, nfds_t count, long long timeout_ns) {
    if (timeout_ns < 0) {
        return ppoll(fds, count, NULL, NULL);
    }
    struct timespec timeout;
    timeout.tv_sec = (time_t)(timeout_ns / 1000000000LL);
    timeout.tv_nsec = (long)(timeout_ns % 1000000000LL);
    return ppoll(fds, count, &timeout, NULL);
}

long long cbp_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + (long long)now.tv_nsec;
}

int cbp_block_signals(const sigset_t *mask) {
    return pthread_sigmask(SIG_BLOCK, mask, NULL);
}

void cbp_keeper_signal_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

void cbp_ignore_sigpipe(void) {
    signal(SIGPIPE, SIG_IGN);
}

int cbp_group_list(const char *user, gid_t group, gid_t *groups, int *count) {
    return getgrouplist(user, group, groups, count);
}

int cbp_wifexited(int status) { return WIFEXITED(status); }
int cbp_wexitstatus(int status) { return WEXITSTATUS(status); }
int cbp_wifsignaled(int status) { return WIFSIGNALED(status); }
int cbp_wtermsig(int status) { return WTERMSIG(status); }

int cbp_spawn_helper(const char *path, char *const *argv, char *const *envp,
                     int stdin_fd, int stdout_fd, int fd3, int fd4, pid_t *pid) {
    // Copy the sources above the targets first, so no dup2 lands on a source still needed.
    int sources[4] = {stdin_fd, stdout_fd, fd3, fd4};
    int copies[4] = {-1, -1, -1, -1};
    int result = 0;
    for (int index = 0; index < 4; index++) {
        if (sources[index] < 0) {
            continue;
        }
        copies[index] = fcntl(sources[index], F_DUPFD_CLOEXEC, 10);
        if (copies[index] < 0) {
            result = errno;
            goto cleanup;
        }
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    if ((result = posix_spawn_file_actions_init(&actions)) != 0) {
        goto cleanup;
    }
    if ((result = posix_spawnattr_init(&attributes)) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        goto cleanup;
    }
    const int targets[4] = {0, 1, 3, 4};
    for (int index = 0; index < 4 && result == 0; index++) {
        if (copies[index] >= 0) {
            result = posix_spawn_file_actions_adddup2(&actions, copies[index], targets[index]);
        } else if (targets[index] > 2) {
            result = posix_spawn_file_actions_addopen(&actions, targets[index], "/dev/null", O_WRONLY, 0);
        }
    }
    if (result == 0) {
        result = posix_spawn_file_actions_addclosefrom_np(&actions, 5);
    }
    sigset_t empty;
    sigset_t all;
    sigemptyset(&empty);
    sigfillset(&all);
    if (result == 0) {
        result = posix_spawnattr_setsigmask(&attributes, &empty);
    }
    if (result == 0) {
        result = posix_spawnattr_setsigdefault(&attributes, &all);
    }
    if (result == 0) {
        result = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    }
    if (result == 0) {
        result = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    }
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
cleanup:
    for (int index = 0; index < 4; index++) {
        if (copies[index] >= 0) {
            close(copies[index]);
        }
    }
    return result;
}
