/* Guest agent: shared definitions. The wire format is described in _vmcore/guest/PROTOCOL.md. */
#ifndef MSB_AGENT_H
#define MSB_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROTO_VERSION 1
#define HEADER_SIZE 12
#define MAX_PAYLOAD (1u << 20)
#define CHUNK_SIZE (64u * 1024u)     /* file data frames */
#define OUTPUT_CHUNK (256u * 1024u) /* command output frames: fewer, bigger frames for throughput */
#define PIPE_SIZE (1 << 20)
#define OUT_HIGH_WATER (4u * 1024u * 1024u)
#define STDIN_HIGH_WATER (64u * 1024u * 1024u) /* safety net: hosts keep to STDIN_WINDOW per stream */
#define STDIN_ACK_EVERY (64u * 1024u)
#define MAX_STREAMS 512

enum msg_type {
    MSG_HELLO = 0x01, MSG_PING = 0x02, MSG_SHUTDOWN = 0x03, MSG_BOOT = 0x04,
    MSG_EXEC = 0x10, MSG_STDIN = 0x11, MSG_STDIN_CLOSE = 0x12, MSG_KILL = 0x13, MSG_RESIZE = 0x14,
    MSG_FS_READ = 0x20, MSG_FS_WRITE = 0x21, MSG_FS_LIST = 0x22, MSG_FS_STAT = 0x23,
    MSG_FS_MKDIR = 0x24, MSG_FS_REMOVE = 0x25, MSG_DATA = 0x26, MSG_DATA_END = 0x27,
    MSG_OK = 0x80, MSG_HELLO_REPLY = 0x81, MSG_PONG = 0x82, MSG_ERROR = 0x83,
    MSG_STARTED = 0x90, MSG_STDOUT = 0x91, MSG_STDERR = 0x92, MSG_EXIT = 0x93, MSG_LIST = 0x94,
    MSG_STDIN_ACK = 0x95,
};

enum field_tag {
    T_ARG = 1, T_ENV = 2, T_CWD = 3, T_STDIN_MODE = 4, T_STDIN_DATA = 5, T_PTY = 6, T_ROWS = 7, T_COLS = 8,
    T_TIMEOUT_MS = 9, T_SIGNAL = 10, T_EXIT_CODE = 11, T_TIMED_OUT = 12, T_PID = 13, T_PATH = 14, T_MODE = 15,
    T_PARENTS = 18, T_RECURSIVE = 19, T_CODE = 20, T_MESSAGE = 21, T_VERSION = 22, T_NAME = 23, T_KIND = 24,
    T_SIZE = 25, T_MTIME_NS = 26, T_ENTRY = 27, T_APPEND = 28, T_RELEASE = 29, T_BOOTED = 30,
    T_HOSTNAME = 40, T_ROOT = 41, T_MOUNT = 42, T_SOURCE_KIND = 43, T_SOURCE = 44, T_TARGET = 45,
    T_FSTYPE = 46, T_FLAGS = 47, T_SIZE_MIB = 48, T_RESTRICTED = 49, T_ENTROPY = 50, T_REALTIME_NS = 51,
};

enum proto_error {
    E_UNKNOWN_TYPE = 1001, E_FRAME_TOO_LARGE = 1002, E_BAD_VERSION = 1003, E_MALFORMED = 1004,
    E_STREAM_IN_USE = 1005, E_NO_STREAM = 1006, E_BAD_STATE = 1007,
};

/* ---- growable byte buffer (proto.c) ---- */
struct buf {
    uint8_t *data;
    size_t head, len, cap; /* valid bytes are data[head, head+len) */
};
int buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);
static inline uint8_t *buf_ptr(struct buf *b) { return b->data + b->head; }

/* ---- field lists (proto.c) ---- */
struct field_iter {
    const uint8_t *p, *end;
    int malformed;
};
struct field {
    uint16_t tag;
    uint32_t len;
    const uint8_t *val;
};
void fields_begin(struct field_iter *it, const uint8_t *p, size_t n);
int fields_next(struct field_iter *it, struct field *f); /* 1: got one, 0: end (check it->malformed) */
int fields_validate(const uint8_t *p, size_t n);           /* 0 ok, -1 malformed */
int field_int(const struct field *f, int64_t *out);          /* 0 ok, -1 not 8 bytes */
char *field_str(const struct field *f);                      /* malloc'd NUL-terminated; NULL if it holds a NUL */

/* Outgoing payload builder. */
struct payload {
    struct buf b;
};
void pl_bytes(struct payload *pl, uint16_t tag, const void *p, size_t n);
void pl_str(struct payload *pl, uint16_t tag, const char *s);
void pl_int(struct payload *pl, uint16_t tag, int64_t v);

/* ---- the connection (loop.c) ---- */
void send_frame(uint8_t type, uint32_t stream, const void *payload, size_t n);
void send_error(uint32_t stream, int64_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void send_ok(uint32_t stream, struct payload *pl);
size_t out_pending(void);
int serve(int fd);            /* runs until SHUTDOWN or the host hangs up */
int serve_set_port(int is_port); /* 1: fd is a device port (EOF = host not connected yet) */
void dispatch(uint8_t type, uint32_t stream, const uint8_t *p, size_t n); /* dispatch.c */
void reply_hello(uint32_t stream); /* HELLO reply; on stream 0 unasked, it is the agent's announcement */
void request_shutdown(void); /* answer what is queued, then stop serving */
/* /dev/NAME of the entry of a sysfs class folder whose `attr` file reads `value` (sysfs.c); -1 + ENODEV if none */
int find_dev_by_attr(const char *class_dir, const char *attr, const char *value, char *out, size_t outlen);
int wait_block_by_serial(const char *serial, char *out, size_t outlen, int timeout_ms);
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- streams (loop.c) ---- */
enum stream_kind { S_EXEC = 1, S_READ = 2, S_WRITE = 3 };
struct stream {
    uint32_t id;
    int kind;
    /* exec */
    pid_t pid;
    int out_fd, err_fd, in_fd; /* -1 when closed */
    int pty;
    struct buf in_buf;
    int in_close_pending;
    int in_gone;          /* the command closed its stdin (or died): later input is dropped, not refused */
    int exited, exit_status;
    int64_t deadline_ms; /* 0 = none */
    int timed_out;
    int grown; /* bit per output pipe already enlarged */
    int ack_stdin;        /* stdin comes in STDIN frames: acknowledge what the command consumed */
    int64_t stdin_unacked; /* consumed (or dropped) since the last STDIN_ACK */
    /* file read/write */
    int file_fd;
    int64_t file_bytes;
    int failed_errno; /* write: first error, reported at DATA_END */
};
struct stream *stream_find(uint32_t id);
struct stream *stream_by_pid(pid_t pid); /* a live, not yet exited exec */
struct stream *stream_new(uint32_t id, int kind);
void stream_free(struct stream *s);
int64_t now_ms(void);

/* ---- exec (exec.c) ---- */
void exec_start(uint32_t stream, const uint8_t *p, size_t n);
void exec_stdin(struct stream *s, const uint8_t *p, size_t n);
void exec_stdin_close(struct stream *s);
void exec_kill(struct stream *s, int sig);
void exec_resize(struct stream *s, const uint8_t *p, size_t n);
void exec_on_exit(pid_t pid, int status); /* from the reaper */
void exec_pump(struct stream *s, short out_rev, short err_rev, short in_rev);
void exec_check_done(struct stream *s);
void exec_check_timeout(struct stream *s, int64_t now);
extern char **exec_base_env;
extern char *exec_default_cwd;
extern int exec_no_new_privs;

/* ---- files (files.c) ---- */
void fs_read_start(uint32_t stream, const uint8_t *p, size_t n);
void fs_read_pump(struct stream *s);
void fs_write_start(uint32_t stream, const uint8_t *p, size_t n);
void fs_write_data(struct stream *s, const uint8_t *p, size_t n);
void fs_write_end(struct stream *s);
void fs_list(uint32_t stream, const uint8_t *p, size_t n);
void fs_stat(uint32_t stream, const uint8_t *p, size_t n);
void fs_mkdir(uint32_t stream, const uint8_t *p, size_t n);
void fs_remove(uint32_t stream, const uint8_t *p, size_t n);
int mkdir_parents(const char *path, mode_t mode); /* mkdir -p; 0 or -1 with errno */

/* ---- PID 1 duties (init.c) ---- */
extern int agent_is_init;
extern int agent_booted;
extern char agent_boot_error[300]; /* why /boot.msb failed; "" otherwise */
void init_early(void);                          /* proc, sys, dev, pts, tmp */
int init_apply_boot(const uint8_t *p, size_t n, char *err, size_t errlen); /* 0 ok */
void init_apply_boot_file(const char *path);
void init_poweroff(void) __attribute__((noreturn));

#endif
