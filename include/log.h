/* log.h — one line per event on stderr, as text or JSON. Thread-safe:
 * every call may be made from any thread once log_init has run. */
#ifndef POOLD_LOG_H
#define POOLD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Set the format and the lowest level written (default: text, info). */
void log_init(enum log_format format, enum log_level min_level);

/* Whether a line of this level is written: lets a caller skip the work of
 * preparing its fields. */
bool log_enabled(enum log_level level);

/*
 * Write one event: a message and key/value fields (NULL-terminated list of
 * const char * pairs). Control characters, quotes and backslashes in every
 * value are escaped, so a client-supplied value cannot forge a line.
 *   log_event(LOG_WARN, "org misconfigured", "org", id, "rule", r, NULL);
 */
void log_event(enum log_level level, const char *msg, ...)
    __attribute__((sentinel));

/* log_event whatever the level set by log_init: for the rare line an
 * operator must see at any level (the generated admin token, which
 * DESIGN.md says is logged once). level only labels the line. */
void log_always(enum log_level level, const char *msg, ...)
    __attribute__((sentinel));

/*
 * Buffered output. Until log_start, every line is written at once (one
 * fputs, as the tests of the format expect). After it, a line is copied
 * into a 256 KiB buffer under a mutex (one memcpy) and a writer thread
 * write(2)s the buffer to stderr: flush_ms after the first line it finds,
 * or at once when the buffer is half full or log_flush asks. Lines keep
 * the order they were logged in (across threads, so per thread too).
 *
 * A full buffer (stderr slower than the log) makes the logging thread wait
 * for the writer up to full_wait_ms; if that wait times out the line is
 * dropped and counted, and until the writer next makes progress further
 * lines are dropped without waiting (a stuck stderr must not stall every
 * request by full_wait_ms). The writer then logs "log lines dropped" with
 * the count.
 *
 * Crashes: log_start installs handlers for SIGSEGV, SIGBUS, SIGABRT and
 * SIGFPE that write(2) what is buffered (async-signal-safe calls only),
 * restore the previous action and re-raise, so the process still dies of
 * the signal (and a sanitizer's handler still reports). A line being
 * written at the instant of the crash may appear twice. A stack overflow
 * is not covered: the handler runs on the crashing thread's stack (the
 * threads libmicrohttpd creates have no alternate signal stack).
 */
#define LOG_FLUSH_MS_DEFAULT 5
#define LOG_FULL_WAIT_MS_DEFAULT 100

struct log_writer_config {
    unsigned flush_ms;     /* 0: LOG_FLUSH_MS_DEFAULT */
    unsigned full_wait_ms; /* 0: LOG_FULL_WAIT_MS_DEFAULT */
};

/* Start the writer thread (cfg may be NULL: defaults) and the crash
 * handlers; registers log_stop with atexit. Call from the main thread after
 * log_init; the writer blocks every asynchronous signal. POOLD_OK, or
 * POOLD_ERR_NOMEM if the thread cannot start (logging stays synchronous).
 * A second call while running does nothing. */
int log_start(const struct log_writer_config *cfg)
    __attribute__((warn_unused_result));

/* Return once every line logged before the call is written. Thread-safe;
 * nothing to do without the writer. */
void log_flush(void);

/* Write everything, stop the writer: later lines are synchronous again.
 * Idempotent; thread-safe. main calls it before returning (also atexit). */
void log_stop(void);

/* Escape src (len bytes) into dst for a JSON string body (no quotes); always
 * NUL-terminates; returns the bytes written (truncates safely). */
size_t log_escape(char *dst, size_t dstlen, const char *src, size_t len);

#endif
