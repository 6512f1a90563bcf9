/* Message dispatch: every frame the host sends, by type, to its handler; anything else gets an ERROR. */
#include <errno.h>
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"

void reply_hello(uint32_t stream) {
    struct payload pl = {0};
    struct utsname u;
    pl_int(&pl, T_VERSION, PROTO_VERSION);
    pl_int(&pl, T_PID, getpid());
    pl_str(&pl, T_NAME, "msb-agent");
    if (uname(&u) == 0)
        pl_str(&pl, T_RELEASE, u.release);
    pl_int(&pl, T_BOOTED, agent_booted);
    if (agent_boot_error[0])
        pl_str(&pl, T_MESSAGE, agent_boot_error);
    send_frame(MSG_HELLO_REPLY, stream, buf_ptr(&pl.b), pl.b.len);
    buf_free(&pl.b);
}

static int new_request_ok(uint32_t stream) {
    if (stream == 0) {
        send_error(stream, E_MALFORMED, "requests need a non-zero stream id");
        return 0;
    }
    if (stream_find(stream)) {
        send_error(stream, E_STREAM_IN_USE, "stream %u is in use", stream);
        return 0;
    }
    return 1;
}

static struct stream *live_stream(uint32_t id, int kind) {
    struct stream *s = stream_find(id);
    if (!s || s->kind != kind) {
        send_error(id, E_NO_STREAM, "no %s stream %u", kind == S_EXEC ? "exec" : "file write", id);
        return NULL;
    }
    return s;
}

void dispatch(uint8_t type, uint32_t stream, const uint8_t *p, size_t n) {
    struct stream *s;
    switch (type) {
    case MSG_HELLO:
        reply_hello(stream);
        return;
    case MSG_PING:
        send_frame(MSG_PONG, stream, p, n);
        return;
    case MSG_SHUTDOWN:
        send_ok(stream, NULL);
        request_shutdown();
        return;
    case MSG_BOOT: {
        char err[256] = "";
        if (agent_booted) {
            send_error(stream, E_BAD_STATE, "boot config already applied");
        } else if (fields_validate(p, n)) {
            send_error(stream, E_MALFORMED, "malformed boot config");
        } else if (init_apply_boot(p, n, err, sizeof(err)) == 0) {
            send_ok(stream, NULL);
        } else {
            send_error(stream, errno ? errno : E_MALFORMED, "boot config: %s", err);
        }
        return;
    }
    case MSG_EXEC:
    case MSG_FS_READ:
    case MSG_FS_WRITE:
    case MSG_FS_LIST:
    case MSG_FS_STAT:
    case MSG_FS_MKDIR:
    case MSG_FS_REMOVE:
        if (!new_request_ok(stream))
            return;
        if (fields_validate(p, n)) {
            send_error(stream, E_MALFORMED, "malformed fields");
            return;
        }
        switch (type) {
        case MSG_EXEC: exec_start(stream, p, n); break;
        case MSG_FS_READ: fs_read_start(stream, p, n); break;
        case MSG_FS_WRITE: fs_write_start(stream, p, n); break;
        case MSG_FS_LIST: fs_list(stream, p, n); break;
        case MSG_FS_STAT: fs_stat(stream, p, n); break;
        case MSG_FS_MKDIR: fs_mkdir(stream, p, n); break;
        default: fs_remove(stream, p, n); break;
        }
        return;
    case MSG_STDIN:
        if ((s = live_stream(stream, S_EXEC)))
            exec_stdin(s, p, n);
        return;
    case MSG_STDIN_CLOSE:
        if ((s = live_stream(stream, S_EXEC)))
            exec_stdin_close(s);
        return;
    case MSG_KILL: {
        if (!(s = live_stream(stream, S_EXEC)))
            return;
        int64_t sig = SIGKILL;
        struct field_iter it;
        struct field f;
        fields_begin(&it, p, n);
        while (fields_next(&it, &f))
            if (f.tag == T_SIGNAL && field_int(&f, &sig))
                it.malformed = 1;
        if (it.malformed || sig < 0 || sig > 64) {
            send_error(stream, E_MALFORMED, "bad KILL payload");
            return;
        }
        exec_kill(s, (int)sig);
        return;
    }
    case MSG_RESIZE:
        if ((s = live_stream(stream, S_EXEC)))
            exec_resize(s, p, n);
        return;
    case MSG_DATA:
        if ((s = live_stream(stream, S_WRITE)))
            fs_write_data(s, p, n);
        return;
    case MSG_DATA_END:
        if ((s = live_stream(stream, S_WRITE)))
            fs_write_end(s);
        return;
    case MSG_ERROR:
        return; /* never answer an error with an error */
    default:
        send_error(stream, E_UNKNOWN_TYPE, "unknown message type 0x%02x", type);
        return;
    }
}

