/*
 * progress.c - the progress line and the summary line of the peftio
 * tools.
 */
#include <sys/ioctl.h>

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static int progress_shown;
static double progress_last;
static double t_start;		/* cli_init() */

/* The step being shown: its start, its unit (NULL: bytes), the items
 * of a step in bytes (0: not counted), and the item being worked on. */
static struct {
	double		 t0;
	const char	*unit;
	uint64_t	 nitems, item;
	char		 what[256];
} M;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
cli_clock_start(void)
{
	t_start = now();
}

double
cli_elapsed(void)
{
	return now() - t_start;
}

const char *
cli_size(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
	double d = (double)v;
	size_t u;

	if (v < 1000) {
		snprintf(buf, len, "%llu B", (unsigned long long)v);
		return buf;
	}
	for (u = 0, d /= 1000.0; d >= 999.995 && u + 1 < sizeof(units) /
	    sizeof(units[0]); u++)
		d /= 1000.0;
	snprintf(buf, len, "%.2f %s", d, units[u]);
	return buf;
}

/* "1:05:07", "4:12", "9 s" */
static const char *
duration(double s, char *buf, size_t len)
{
	unsigned long t = s < 0 ? 0 : (unsigned long)(s + 0.5);

	if (t >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60,
		    t % 60);
	else if (t >= 60)
		snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
	else
		snprintf(buf, len, "%lu s", t);
	return buf;
}

static int
progress_on(void)
{
	static int tty = -1;

	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	return tty && cli_verbose >= 1;
}

static size_t
columns(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

void
cli_meter(const char *unit, uint64_t nitems)
{
	cli_progress_end();
	M.t0 = now();
	M.unit = unit;
	M.nitems = nitems;
	M.item = 0;
	M.what[0] = '\0';
}

void
cli_progress(uint64_t done, uint64_t total, const char *what)
{
	char line[512], a[32], b[32], c[32];
	unsigned char *p;
	double t, el, rate;
	size_t o = 0, w;
	int more;

	if (!progress_on())
		return;
	t = now();
	if (M.t0 == 0)
		M.t0 = t;
	if (what != NULL && strncmp(what, M.what, sizeof(M.what) - 1) != 0) {
		snprintf(M.what, sizeof(M.what), "%s", what);
		/* A name from a file stays on its line. */
		for (p = (unsigned char *)M.what; *p != '\0'; p++)
			if (*p < 0x20 || *p == 0x7f)
				*p = '?';
		M.item++;
	}
	/* At most 10 lines a second. */
	if (progress_shown && t - progress_last < 0.1 &&
	    (total == 0 || done < total))
		return;
	progress_last = t;
	el = t - M.t0;
#define ADD(...) do { \
	if (o < sizeof(line)) \
		o += (size_t)snprintf(line + o, sizeof(line) - o, __VA_ARGS__); \
} while (0)
	ADD("%s: ", cli_progname);
	if (total > 0)
		ADD("%3d%% ", (int)(100.0 * (double)min_u64(done, total) /
		    (double)total));
	if (M.unit != NULL) {
		ADD("%llu/%llu %s", (unsigned long long)done,
		    (unsigned long long)total, M.unit);
		rate = el > 0 ? (double)done / el : 0;
	} else {
		if (M.nitems > 0)
			ADD("%llu/%llu, ", (unsigned long long)M.item,
			    (unsigned long long)M.nitems);
		ADD("%s", cli_size(done, a, sizeof(a)));
		if (total > 0)
			ADD(" of %s", cli_size(total, b, sizeof(b)));
		rate = el > 0 ? (double)done / el : 0;
		if (el >= 0.5)
			ADD(", %s/s", cli_size((uint64_t)rate, c, sizeof(c)));
	}
	more = total > done && rate > 0 && el >= 1.0;
	if (more)
		ADD(", %s left", duration((double)(total - done) / rate, c,
		    sizeof(c)));
	if (M.what[0] != '\0')
		ADD(": %s", M.what);
#undef ADD
	/* One line, whatever the terminal's width: no wrap, so that \r
	 * goes back to its start. */
	w = columns() - 1;
	if (o >= sizeof(line))
		o = sizeof(line) - 1;
	if (o > w)
		o = w;
	fprintf(stderr, "\r\033[K%.*s", (int)o, line);
	progress_shown = 1;
}

void
cli_progress_end(void)
{
	if (progress_shown) {
		fprintf(stderr, "\r\033[K");
		progress_shown = 0;
	}
}

void
cli_xf_progress(void *ctx, uint64_t done, uint64_t total, const char *what)
{
	if (what != NULL)
		cli_progress(done, total, what);
	else
		cli_progress_end();
}

void
cli_summary(const char *name, uint64_t in, uint64_t out, const char *more)
{
	char a[32], b[32], c[32], rate[48] = "";
	double t = cli_elapsed();

	if (t >= 0.05)
		snprintf(rate, sizeof(rate), ", %s/s",
		    cli_size((uint64_t)((double)in / t), c, sizeof(c)));
	cli_info("%s : %s => %s (%.1f%%)%s%s, %.1f s%s", name,
	    cli_size(in, a, sizeof(a)), cli_size(out, b, sizeof(b)),
	    in > 0 ? 100.0 * (double)out / (double)in : 100.0,
	    more != NULL ? ", " : "", more != NULL ? more : "", t, rate);
}
