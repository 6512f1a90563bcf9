/* The connection: frame reading and dispatch, the outgoing queue, the stream table and the poll loop. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

static int conn_fd = -1;
static struct buf in_q, out_q;
static uint64_t discard_left;   /* bytes of a refused (oversized) frame still to skip */
static int shutting_down;
static int conn_is_port;        /* a device port: EOF means "host not connected", not "gone" */
static int64_t port_retry_at;   /* when to poll a disconnected port again */
static struct stream *streams[MAX_STREAMS];

void request_shutdown(void) { shutting_down = 1; }

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void agent_log(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(2, "msb-agent: ", 11);
    w = write(2, line, (size_t)n);
    (void)w;
}

/* ---- outgoing ---- */

size_t out_pending(void) { return out_q.len; }

void send_frame(uint8_t type, uint32_t stream, const void *payload, size_t n) {
    uint8_t h[HEADER_SIZE] = {PROTO_VERSION, type, 0, 0,
                              (uint8_t)stream, (uint8_t)(stream >> 8), (uint8_t)(stream >> 16), (uint8_t)(stream >> 24),
                              (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    if (buf_append(&out_q, h, sizeof(h)) || buf_append(&out_q, payload, n))
        agent_log("out of memory queueing a frame");
}

void send_ok(uint32_t stream, struct payload *pl) {
    if (pl) {
        send_frame(MSG_OK, stream, buf_ptr(&pl->b), pl->b.len);
        buf_free(&pl->b);
    } else {
        send_frame(MSG_OK, stream, NULL, 0);
    }
}

void send_error(uint32_t stream, int64_t code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct payload pl = {0};
    pl_int(&pl, T_CODE, code);
    pl_str(&pl, T_MESSAGE, msg);
    send_frame(MSG_ERROR, stream, buf_ptr(&pl.b), pl.b.len);
    buf_free(&pl.b);
}

static void flush_out(void) {
    while (out_q.len > 0) {
        ssize_t w = write(conn_fd, buf_ptr(&out_q), out_q.len);
        if (w > 0) {
            buf_consume(&out_q, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* the host side is gone or not connected: what was queued for it is lost */
        buf_consume(&out_q, out_q.len);
        return;
    }
}

/* ---- streams ---- */

struct stream *stream_find(uint32_t id) {
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i] && streams[i]->id == id)
            return streams[i];
    return NULL;
}

struct stream *stream_by_pid(pid_t pid) {
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i] && streams[i]->kind == S_EXEC && streams[i]->pid == pid && !streams[i]->exited)
            return streams[i];
    return NULL;
}

struct stream *stream_new(uint32_t id, int kind) {
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (streams[i])
            continue;
        struct stream *s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        s->id = id;
        s->kind = kind;
        s->out_fd = s->err_fd = s->in_fd = s->file_fd = -1;
        s->pid = -1;
        streams[i] = s;
        return s;
    }
    errno = EMFILE;
    return NULL;
}

void stream_free(struct stream *s) {
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i] == s)
            streams[i] = NULL;
    int fds[] = {s->out_fd, s->err_fd, s->in_fd, s->file_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    buf_free(&s->in_buf);
    free(s);
}

static size_t stdin_pending(void) {
    size_t n = 0;
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i])
            n += streams[i]->in_buf.len;
    return n;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Parse and dispatch every complete frame in in_q. */
static void process_input(void) {
    for (;;) {
        if (discard_left) {
            size_t k = in_q.len < discard_left ? in_q.len : (size_t)discard_left;
            buf_consume(&in_q, k);
            discard_left -= k;
            if (discard_left)
                return;
        }
        if (in_q.len < HEADER_SIZE)
            return;
        const uint8_t *h = buf_ptr(&in_q);
        uint8_t version = h[0], type = h[1];
        uint32_t stream = rd32(h + 4), len = rd32(h + 8);
        if (len > MAX_PAYLOAD) {
            send_error(stream, E_FRAME_TOO_LARGE, "frame payload of %u bytes exceeds %u", len, MAX_PAYLOAD);
            buf_consume(&in_q, HEADER_SIZE);
            discard_left = len;
            continue;
        }
        if (in_q.len < HEADER_SIZE + (size_t)len)
            return;
        if (version != PROTO_VERSION) {
            if (type != MSG_ERROR)
                send_error(stream, E_BAD_VERSION, "protocol version %u not supported (want %u)", version,
                           PROTO_VERSION);
        } else {
            dispatch(type, stream, h + HEADER_SIZE, len);
        }
        buf_consume(&in_q, HEADER_SIZE + (size_t)len);
        if (shutting_down)
            return;
    }
}

/* Returns 0 on EOF of a socket transport (the host is gone). */
static int read_input(void) {
    uint8_t tmp[256 * 1024];
    for (int rounds = 0; rounds < 4; rounds++) {
        ssize_t r = read(conn_fd, tmp, sizeof(tmp));
        if (r > 0) {
            if (buf_append(&in_q, tmp, (size_t)r))
                agent_log("out of memory reading input");
            if ((size_t)r < sizeof(tmp))
                break;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (!conn_is_port)
            return 0;
        /* device port with no host connected: drop any partial frame, retry later */
        buf_consume(&in_q, in_q.len);
        discard_left = 0;
        port_retry_at = now_ms() + 50;
        break;
    }
    process_input();
    return 1;
}

static void reap_children(int sfd) {
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        exec_on_exit(pid, status);
}

static void kill_everything(void) {
    for (int i = 0; i < MAX_STREAMS; i++)
        if (streams[i] && streams[i]->kind == S_EXEC && streams[i]->pid > 0 && !streams[i]->exited)
            kill(-streams[i]->pid, SIGKILL);
}

static void flush_blocking(void) {
    int fl = fcntl(conn_fd, F_GETFL);
    fcntl(conn_fd, F_SETFL, fl & ~O_NONBLOCK);
    flush_out();
    fcntl(conn_fd, F_SETFL, fl);
}

int serve_set_port(int is_port) { return conn_is_port = is_port; }

int serve(int fd) {
    conn_fd = fd;
    int sockbuf = 4 << 20; /* a socket transport (native, namespace): room for bulk output; not a socket: no-op */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof(sockbuf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof(sockbuf));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        agent_log("signalfd: %s", strerror(errno));
        return 1;
    }
    reap_children(sfd); /* children that exited before we started */
    reply_hello(0);     /* the announcement: hosts on a console port discard what came before it (echo) */

    struct pollfd pfds[2 + 3 * MAX_STREAMS];
    struct stream *owner[2 + 3 * MAX_STREAMS];
    int role[2 + 3 * MAX_STREAMS]; /* 0 out, 1 err, 2 in */
    for (;;) {
        flush_out();
        if (shutting_down && out_q.len == 0)
            break;
        int64_t now = now_ms();
        int timeout = -1;
        int np = 0;
        int want_conn = !shutting_down && stdin_pending() < STDIN_HIGH_WATER && out_q.len < 4 * OUT_HIGH_WATER;
        if (conn_is_port && port_retry_at) {
            if (now < port_retry_at) {
                want_conn = 0;
                timeout = (int)(port_retry_at - now);
            } else {
                port_retry_at = 0;
            }
        }
        pfds[np] = (struct pollfd){.fd = conn_fd, .events = (short)((want_conn ? POLLIN : 0) | (out_q.len ? POLLOUT : 0))};
        owner[np++] = NULL;
        pfds[np] = (struct pollfd){.fd = sfd, .events = POLLIN};
        owner[np++] = NULL;
        int room = out_q.len < OUT_HIGH_WATER;
        for (int i = 0; i < MAX_STREAMS; i++) {
            struct stream *s = streams[i];
            if (!s)
                continue;
            if (s->kind == S_READ) {
                if (room)
                    timeout = 0; /* a regular file is always readable: pump it this round */
                continue;
            }
            if (s->kind != S_EXEC)
                continue;
            if (s->deadline_ms && !s->exited) {
                int64_t left = s->deadline_ms - now;
                if (left < 0)
                    left = 0;
                if (timeout < 0 || left < timeout)
                    timeout = (int)left;
            }
            if (s->exited && room)
                timeout = 0; /* draining after exit happens without waiting */
            int fds[3] = {s->out_fd, s->err_fd, s->in_fd};
            for (int r = 0; r < 3; r++) {
                if (fds[r] < 0)
                    continue;
                short ev = r == 2 ? (s->in_buf.len ? POLLOUT : 0) : (room ? POLLIN : 0);
                if (!ev)
                    continue;
                pfds[np] = (struct pollfd){.fd = fds[r], .events = ev};
                owner[np] = s;
                role[np++] = r;
            }
        }
        int pr = poll(pfds, (nfds_t)np, timeout);
        if (pr < 0 && errno != EINTR) {
            agent_log("poll: %s", strerror(errno));
            return 1;
        }
        if (pr < 0)
            continue;
        if (pfds[1].revents & POLLIN)
            reap_children(sfd);
        if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!read_input()) {
                kill_everything();
                return 0; /* the host closed the connection */
            }
        }
        /* pump the streams that polled ready (owner pointers may be stale once a stream ended: check by id) */
        for (int k = 2; k < np; k++) {
            if (!pfds[k].revents)
                continue;
            struct stream *s = owner[k];
            int alive = 0;
            for (int i = 0; i < MAX_STREAMS; i++)
                alive |= streams[i] == s;
            if (!alive)
                continue;
            short rev = pfds[k].revents;
            exec_pump(s, role[k] == 0 ? rev : 0, role[k] == 1 ? rev : 0, role[k] == 2 ? rev : 0);
        }
        now = now_ms();
        for (int i = 0; i < MAX_STREAMS; i++) {
            struct stream *s = streams[i];
            if (!s)
                continue;
            if (s->kind == S_READ) {
                if (out_q.len < OUT_HIGH_WATER)
                    fs_read_pump(s);
            } else if (s->kind == S_EXEC) {
                exec_check_timeout(s, now);
                if (streams[i])
                    exec_check_done(s);
            }
        }
    }
    flush_blocking();
    kill_everything();
    close(sfd);
    return 0;
}
