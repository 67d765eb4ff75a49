/*
 * error.c - error values and messages.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "peftio_private.h"

const char *
peftio_version(void)
{
	return PEFTIO_VERSION_STRING;
}

/*
 * A message is one line whatever the names in it hold: control
 * characters (a tensor name may contain a newline) become \xNN; the
 * message is cut where the escapes no longer fit.
 */
static void
one_line(char *msg)
{
	char tmp[PEFTIO_ERRMSG_MAX];
	const unsigned char *p;
	size_t o = 0;

	for (p = (const unsigned char *)msg; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			break;
	if (*p == '\0')
		return;
	for (p = (const unsigned char *)msg; *p != '\0'; p++) {
		if (*p >= 0x20 && *p != 0x7f) {
			if (o + 1 >= sizeof(tmp))
				break;
			tmp[o++] = (char)*p;
		} else {
			if (o + 4 >= sizeof(tmp))
				break;
			snprintf(tmp + o, 5, "\\x%02x", *p);
			o += 4;
		}
	}
	tmp[o] = '\0';
	memcpy(msg, tmp, o + 1);
}

static void __attribute__((format(printf, 4, 0)))
vset(struct peftio_error *err, int code, int sys, const char *fmt, va_list ap)
{
	err->code = code;
	err->sys_errno = sys;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	one_line(err->msg);
}

int
peftio_error_set(struct peftio_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vset(err, code, 0, fmt, ap);
		va_end(ap);
	}
	return code;
}

int
peftio_error_sys(struct peftio_error *err, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;
	size_t n;

	if (err != NULL) {
		va_start(ap, fmt);
		vset(err, PEFTIO_EIO, saved, fmt, ap);
		va_end(ap);
		n = strlen(err->msg);
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s",
		    strerror(saved));
	}
	errno = saved;
	return PEFTIO_EIO;
}

void
peftio_error_prefix(struct peftio_error *err, const char *fmt, ...)
{
	char pre[PEFTIO_ERRMSG_MAX];
	size_t pl, ml, cap = sizeof(err->msg) - 1;
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre) - 2, fmt, ap);
	va_end(ap);
	strcat(pre, ": ");
	pl = strlen(pre);
	ml = strlen(err->msg);
	if (pl > cap)
		pl = cap;
	if (pl + ml > cap)
		ml = cap - pl;
	memmove(err->msg + pl, err->msg, ml);
	memcpy(err->msg, pre, pl);
	err->msg[pl + ml] = '\0';
	one_line(err->msg);
}

void
peftio_error_clear(struct peftio_error *err)
{
	if (err != NULL) {
		err->code = 0;
		err->sys_errno = 0;
		err->msg[0] = '\0';
	}
}

const char *
peftio_status_name(int code)
{
	static const char *const names[] = {
		"success", "I/O error", "malformed input", "out of memory",
		"invalid argument", "unsupported", "not found",
		"already exists", "non-finite value", "mismatch",
		"checksum mismatch"
	};

	if (code > 0 || -code >= (int)(sizeof(names) / sizeof(names[0])))
		return "unknown error";
	return names[-code];
}
