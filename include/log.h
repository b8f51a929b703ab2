/* log.h — one line per event on stderr, as text or JSON. */
#ifndef POOLD_LOG_H
#define POOLD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Set the format and the lowest level written (default: text, info). */
void log_init(enum log_format format, enum log_level min_level);

/*
 * Write one event: a message and key/value fields (NULL-terminated list of
 * const char * pairs). Control characters, quotes and backslashes in every
 * value are escaped, so a client-supplied value cannot forge a line.
 *   log_event(LOG_WARN, "org misconfigured", "org", id, "rule", r, NULL);
 */
void log_event(enum log_level level, const char *msg, ...)
    __attribute__((sentinel));

/* printf-style message with no fields; the formatted text is escaped too. */
void log_msgf(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Escape src (len bytes) into dst for a JSON string body (no quotes); always
 * NUL-terminates; returns the bytes written (truncates safely). */
size_t log_escape(char *dst, size_t dstlen, const char *src, size_t len);

#endif
