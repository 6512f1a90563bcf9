/* EXEC streams: spawning commands (pipes or a pty), stdin, output chunks, kill, timeouts and exit reports. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

char **exec_base_env;     /* NULL: the agent's own environment */
char *exec_default_cwd;   /* NULL: the agent's cwd */
int exec_no_new_privs;

extern char **environ;

static const char DEFAULT_PATH[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct exec_req {
    char **argv, **env;
    int argc, envc;
    char *cwd;
    int64_t stdin_mode, pty, rows, cols, timeout_ms;
    const uint8_t *stdin_data;
    size_t stdin_len;
};

static void req_free(struct exec_req *r) {
    for (int i = 0; i < r->argc; i++)
        free(r->argv[i]);
    for (int i = 0; i < r->envc; i++)
        free(r->env[i]);
    free(r->argv);
    free(r->env);
    free(r->cwd);
}

static int push_str(char ***arr, int *count, const struct field *f) {
    char *s = field_str(f);
    if (!s)
        return -1;
    char **a = realloc(*arr, sizeof(char *) * (size_t)(*count + 2));
    if (!a) {
        free(s);
        return -1;
    }
    a[(*count)++] = s;
    a[*count] = NULL;
    *arr = a;
    return 0;
}

static int parse_req(const uint8_t *p, size_t n, struct exec_req *r) {
    struct field_iter it;
    struct field f;
    memset(r, 0, sizeof(*r));
    r->rows = 24;
    r->cols = 80;
    fields_begin(&it, p, n);
    while (fields_next(&it, &f)) {
        int bad = 0;
        switch (f.tag) {
        case T_ARG: bad = push_str(&r->argv, &r->argc, &f); break;
        case T_ENV: bad = push_str(&r->env, &r->envc, &f) || !strchr(r->env[r->envc - 1], '='); break;
        case T_CWD: free(r->cwd); bad = !(r->cwd = field_str(&f)); break;
        case T_STDIN_MODE: bad = field_int(&f, &r->stdin_mode) || r->stdin_mode < 0 || r->stdin_mode > 2; break;
        case T_STDIN_DATA: r->stdin_data = f.val; r->stdin_len = f.len; break;
        case T_PTY: bad = field_int(&f, &r->pty); break;
        case T_ROWS: bad = field_int(&f, &r->rows) || r->rows < 1 || r->rows > 65535; break;
        case T_COLS: bad = field_int(&f, &r->cols) || r->cols < 1 || r->cols > 65535; break;
        case T_TIMEOUT_MS: bad = field_int(&f, &r->timeout_ms) || r->timeout_ms < 0; break;
        default: break; /* unknown tags are ignored */
        }
        if (bad)
            return -1;
    }
    if (it.malformed || r->argc == 0 || r->argv[0][0] == 0)
        return -1;
    return 0;
}

/* base environment with the request's NAME=value entries replacing or added */
static char **merged_env(char **extra, int n_extra) {
    char **base = exec_base_env ? exec_base_env : environ;
    int nb = 0;
    while (base && base[nb])
        nb++;
    char **out = calloc((size_t)(nb + n_extra + 2), sizeof(char *));
    if (!out)
        return base;
    int n = 0, has_path = 0;
    for (int i = 0; i < nb; i++) {
        out[n++] = base[i];
        has_path |= strncmp(base[i], "PATH=", 5) == 0;
    }
    if (!has_path)
        out[n++] = (char *)DEFAULT_PATH;
    for (int i = 0; i < n_extra; i++) {
        size_t klen = (size_t)(strchr(extra[i], '=') - extra[i]) + 1;
        int j;
        for (j = 0; j < n; j++)
            if (strncmp(out[j], extra[i], klen) == 0)
                break;
        out[j] = extra[i];
        if (j == n)
            n++;
    }
    out[n] = NULL;
    return out;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void close_if(int *fd) {
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* dup2 that also works when fd already is target (then only its close-on-exec flag is cleared) */
static int place_fd(int fd, int target) {
    if (fd == target)
        return fcntl(fd, F_SETFD, 0);
    return dup2(fd, target);
}

/* In the child: never returns. Reports an exec failure's errno on err_pipe. Every fd the child opens itself is
 * close-on-exec, so the command starts with exactly stdin, stdout and stderr. */
static void child_exec(struct exec_req *r, int in_r, int out_w, int err_w, const char *pts_name, int err_pipe) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    if (pts_name) {
        int t = open(pts_name, O_RDWR | O_CLOEXEC);
        if (t < 0)
            goto fail;
        ioctl(t, TIOCSCTTY, 0);
        in_r = out_w = err_w = t;
    }
    if (in_r < 0 && (in_r = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
        goto fail;
    if (place_fd(in_r, 0) < 0 || place_fd(out_w, 1) < 0 || place_fd(err_w, 2) < 0)
        goto fail;
    const char *cwd = r->cwd ? r->cwd : exec_default_cwd;
    if (cwd && chdir(cwd) < 0)
        goto fail;
    if (exec_no_new_privs)
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    environ = merged_env(r->env, r->envc);
    execvp(r->argv[0], r->argv);
fail : {
    int e = errno;
    ssize_t w = write(err_pipe, &e, sizeof(e));
    (void)w;
    _exit(127);
}
}

void exec_start(uint32_t stream, const uint8_t *p, size_t n) {
    struct exec_req r;
    if (parse_req(p, n, &r)) {
        req_free(&r);
        send_error(stream, E_MALFORMED, "EXEC needs ARG fields (strings without NUL) and valid options");
        return;
    }
    struct stream *s = stream_new(stream, S_EXEC);
    if (!s) {
        req_free(&r);
        send_error(stream, EMFILE, "too many live streams");
        return;
    }
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, in_p[2] = {-1, -1}, ep[2] = {-1, -1};
    int master = -1;
    char pts_name[128] = "";
    int ok = pipe2(ep, O_CLOEXEC) == 0;
    if (ok && r.pty) {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        ok = master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0 &&
             ptsname_r(master, pts_name, sizeof(pts_name)) == 0;
        if (ok) {
            struct winsize ws = {.ws_row = (unsigned short)r.rows, .ws_col = (unsigned short)r.cols};
            ioctl(master, TIOCSWINSZ, &ws);
        }
    } else if (ok) {
        ok = pipe2(out_p, O_CLOEXEC) == 0 && pipe2(err_p, O_CLOEXEC) == 0 &&
             (r.stdin_mode == 0 || pipe2(in_p, O_CLOEXEC) == 0);
    }
    pid_t pid = ok ? fork() : -1;
    if (pid == 0) {
        close(ep[0]);
        child_exec(&r, in_p[0], out_p[1], err_p[1], r.pty ? pts_name : NULL, ep[1]);
    }
    int e = errno;
    close_if(&ep[1]);
    close_if(&out_p[1]);
    close_if(&err_p[1]);
    close_if(&in_p[0]);
    int child_errno = 0;
    if (pid > 0) {
        ssize_t got;
        do
            got = read(ep[0], &child_errno, sizeof(child_errno));
        while (got < 0 && errno == EINTR);
        if (got != (ssize_t)sizeof(child_errno))
            child_errno = 0;
    }
    close_if(&ep[0]);
    if (pid <= 0 || child_errno) {
        if (pid > 0)
            waitpid(pid, NULL, 0);
        close_if(&out_p[0]);
        close_if(&err_p[0]);
        close_if(&in_p[1]);
        close_if(&master);
        stream_free(s);
        int code = child_errno ? child_errno : e;
        send_error(stream, code, "cannot run %s: %s", r.argv[0], strerror(code));
        req_free(&r);
        return;
    }
    s->pid = pid;
    if (r.pty) {
        s->pty = 1;
        s->out_fd = master;
        s->in_fd = dup(master);
        fcntl(s->in_fd, F_SETFD, FD_CLOEXEC);
    } else {
        s->out_fd = out_p[0];
        s->err_fd = err_p[0];
        s->in_fd = in_p[1];
    }
    set_nonblock(s->out_fd);
    if (s->err_fd >= 0)
        set_nonblock(s->err_fd);
    if (s->in_fd >= 0)
        set_nonblock(s->in_fd);
    if (r.timeout_ms > 0)
        s->deadline_ms = now_ms() + r.timeout_ms;
    struct payload pl = {0};
    pl_int(&pl, T_PID, pid);
    send_frame(MSG_STARTED, stream, buf_ptr(&pl.b), pl.b.len);
    buf_free(&pl.b);
    s->ack_stdin = r.stdin_mode != 2;
    if (r.stdin_mode == 2) {
        buf_append(&s->in_buf, r.stdin_data, r.stdin_len);
        exec_stdin_close(s);
    }
    req_free(&r);
}

/* Credit the host's stdin window: bytes the command consumed, or that were dropped. */
static void ack_stdin(struct stream *s, size_t n, int now) {
    s->stdin_unacked += (int64_t)n;
    if (!s->ack_stdin || !s->stdin_unacked || (!now && s->stdin_unacked < STDIN_ACK_EVERY))
        return;
    struct payload pl = {0};
    pl_int(&pl, T_SIZE, s->stdin_unacked);
    send_frame(MSG_STDIN_ACK, s->id, buf_ptr(&pl.b), pl.b.len);
    buf_free(&pl.b);
    s->stdin_unacked = 0;
}

static void stdin_flush(struct stream *s) {
    while (s->in_fd >= 0 && s->in_buf.len) {
        ssize_t w = write(s->in_fd, buf_ptr(&s->in_buf), s->in_buf.len);
        if (w > 0) {
            buf_consume(&s->in_buf, (size_t)w);
            ack_stdin(s, (size_t)w, s->in_buf.len == 0);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            return;
        } else { /* the command closed its stdin: what it did not read is dropped */
            size_t dropped = s->in_buf.len;
            buf_consume(&s->in_buf, dropped);
            close_if(&s->in_fd);
            s->in_gone = 1;
            ack_stdin(s, dropped, 1);
        }
    }
    if (s->in_close_pending && s->in_buf.len == 0 && s->in_fd >= 0) {
        if (s->pty) {
            ssize_t w = write(s->in_fd, "\x04", 1); /* end of input on a terminal is ^D */
            (void)w;
        }
        close_if(&s->in_fd);
    }
}

void exec_stdin(struct stream *s, const uint8_t *p, size_t n) {
    if (s->in_close_pending || (s->in_fd < 0 && !s->exited && !s->in_gone)) {
        send_error(s->id, E_BAD_STATE, "stdin of stream %u is not open", s->id);
        return;
    }
    if (s->in_fd < 0) { /* the command is gone, or closed its stdin: input is dropped */
        ack_stdin(s, n, 1);
        return;
    }
    buf_append(&s->in_buf, p, n);
    stdin_flush(s);
}

void exec_stdin_close(struct stream *s) {
    s->in_close_pending = 1;
    stdin_flush(s);
}

void exec_kill(struct stream *s, int sig) {
    if (s->exited || s->pid <= 0)
        return;
    if (kill(-s->pid, sig) < 0)
        kill(s->pid, sig);
}

void exec_resize(struct stream *s, const uint8_t *p, size_t n) {
    struct field_iter it;
    struct field f;
    int64_t rows = 0, cols = 0;
    fields_begin(&it, p, n);
    while (fields_next(&it, &f)) {
        if (f.tag == T_ROWS && field_int(&f, &rows))
            it.malformed = 1;
        if (f.tag == T_COLS && field_int(&f, &cols))
            it.malformed = 1;
    }
    if (it.malformed || !s->pty || rows < 1 || cols < 1 || rows > 65535 || cols > 65535) {
        send_error(s->id, E_MALFORMED, "RESIZE needs ROWS and COLS on a pty stream");
        return;
    }
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    ioctl(s->out_fd, TIOCSWINSZ, &ws);
}

void exec_on_exit(pid_t pid, int status) {
    struct stream *s = stream_by_pid(pid);
    if (!s)
        return; /* an orphan re-parented to us: reaped, nothing to report */
    s->exited = 1;
    s->exit_status = status;
}

/* Read one output fd while there is room; 1 when it reached EOF (or EAGAIN with draining set). */
static int pump_output(struct stream *s, int *fd, uint8_t type, int draining) {
    static uint8_t tmp[OUTPUT_CHUNK];
    for (int rounds = 0; rounds < 16 && *fd >= 0 && out_pending() < OUT_HIGH_WATER; rounds++) {
        ssize_t r = read(*fd, tmp, sizeof(tmp));
        if (r > 0) {
            send_frame(type, s->id, tmp, (size_t)r);
            if (r == 65536 && !s->pty && !(s->grown & (1 << type % 2))) {
                /* bulk output: a bigger pipe means fewer wakeups (grown only then: 50 small execs stay cheap) */
                fcntl(*fd, F_SETPIPE_SZ, PIPE_SIZE);
                s->grown |= 1 << type % 2;
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN && !draining)
            return 0;
        close_if(fd); /* EOF, EIO (pty hung up), or nothing more after the command exited */
        return 1;
    }
    return *fd < 0;
}

void exec_pump(struct stream *s, short out_rev, short err_rev, short in_rev) {
    if (out_rev)
        pump_output(s, &s->out_fd, MSG_STDOUT, 0);
    if (err_rev)
        pump_output(s, &s->err_fd, MSG_STDERR, 0);
    if (in_rev) /* writable, or POLLERR/POLLHUP: the write tells which */
        stdin_flush(s);
}

void exec_check_timeout(struct stream *s, int64_t now) {
    if (s->deadline_ms && !s->exited && now >= s->deadline_ms) {
        s->timed_out = 1;
        s->deadline_ms = 0;
        exec_kill(s, SIGKILL);
    }
}

void exec_check_done(struct stream *s) {
    if (!s->exited)
        return;
    if (s->out_fd >= 0)
        pump_output(s, &s->out_fd, MSG_STDOUT, 1);
    if (s->err_fd >= 0)
        pump_output(s, &s->err_fd, MSG_STDERR, 1);
    if (s->out_fd >= 0 || s->err_fd >= 0)
        return; /* more output waits for room in the outgoing queue */
    struct payload pl = {0};
    if (WIFSIGNALED(s->exit_status))
        pl_int(&pl, T_SIGNAL, WTERMSIG(s->exit_status));
    else
        pl_int(&pl, T_EXIT_CODE, WEXITSTATUS(s->exit_status));
    pl_int(&pl, T_TIMED_OUT, s->timed_out);
    send_frame(MSG_EXIT, s->id, buf_ptr(&pl.b), pl.b.len);
    buf_free(&pl.b);
    stream_free(s);
}
