/*
 * cli.c - command-line helpers shared by the peftio tools.
 */
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"

#if defined(__SANITIZE_ADDRESS__)
#define CLI_ASAN	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLI_ASAN	1
#endif
#endif
#ifdef CLI_ASAN
#include <sanitizer/lsan_interface.h>
#endif

const char *cli_progname = "peftio";
int cli_verbose = 1;

/*
 * No BLAS thread pool.  The library calls BLAS from its own threads,
 * one BLAS thread each (lib/linalg.c), but OpenBLAS starts a pool of a
 * thread per CPU when it is loaded: each spins on sched_yield() for
 * about 0.1 s of CPU time before it sleeps (on two cores, a core taken
 * from the first tensors of every run) and takes a work buffer, which
 * it waits for forever when memory is short.  The pool is as large as
 * the CPUs the process may run on, so while the shared libraries start
 * that is one: .preinit_array runs before them, a constructor of the
 * program after them and before main().  (OPENBLAS_NUM_THREADS=1 set
 * that early would be lost: the C library sets up the environment
 * after .preinit_array.)
 */
static cpu_set_t cli_cpus;
static int cli_cpus_narrowed;

static void
one_cpu(int argc, char **argv, char **envp)
{
	cpu_set_t one;
	int cpu;

	(void)argc;
	(void)argv;
	(void)envp;
	if (sched_getaffinity(0, sizeof(cli_cpus), &cli_cpus) != 0 ||
	    CPU_COUNT(&cli_cpus) < 2)
		return;
	for (cpu = 0; !CPU_ISSET(cpu, &cli_cpus); cpu++)
		;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	cli_cpus_narrowed = sched_setaffinity(0, sizeof(one), &one) == 0;
}

__attribute__((section(".preinit_array"), used))
static void (*const cli_preinit)(int, char **, char **) = one_cpu;

__attribute__((constructor)) static void
all_cpus(void)
{
	if (cli_cpus_narrowed)
		(void)sched_setaffinity(0, sizeof(cli_cpus), &cli_cpus);
}

/*
 * The end of every run: remove what temporaries remain after a failure
 * (xmalloc() exits from anywhere) and leave without running the shared
 * libraries' destructors.  OpenBLAS's joins its thread pool, and a pool
 * thread that found no memory for its buffer waits for it forever.
 */
static void
at_exit(int status, void *arg)
{
	(void)arg;
	if (status != 0)
		peftio_cleanup_temps();
	(void)fflush(NULL);
#ifdef CLI_ASAN
	/* What exit() would have done before the destructors. */
	__lsan_do_leak_check();
#endif
	_exit(status);
}

static void
on_signal(int sig, siginfo_t *si, void *uc)
{
	static const char msg[] = ": input changed while being read "
	    "(truncated under a mapping)\n";

	(void)uc;
	peftio_cleanup_temps();
	/* SIGBUS from the kernel: a page of a mapped input went away. */
	if (sig == SIGBUS && si != NULL && si->si_code > 0) {
		(void)write(STDERR_FILENO, cli_progname, strlen(cli_progname));
		(void)write(STDERR_FILENO, msg, sizeof(msg) - 1);
		_exit(CLI_EXIT_ERROR);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Every signal whose default action ends the process, but for SIGKILL
 * (and SIGSTOP, which only stops it).  A signal that already has a
 * disposition stays as it is: one ignored by the parent (a background
 * job's SIGINT), or a sanitizer's handler of a fault.
 */
void
cli_init(const char *progname)
{
	static const int sigs[] = {
		SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS,
		SIGFPE, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM,
#ifdef SIGSTKFLT
		SIGSTKFLT,
#endif
		SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF,
#ifdef SIGIO
		SIGIO,
#endif
#ifdef SIGPWR
		SIGPWR,
#endif
		SIGSYS
	};
	struct sigaction sa, old;
	size_t i;
	int sig;

	cli_progname = progname;
	cli_clock_start();
	on_exit(at_exit, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], NULL, &old) == 0 &&
		    !(old.sa_flags & SA_SIGINFO) &&
		    old.sa_handler == SIG_DFL)
			sigaction(sigs[i], &sa, NULL);
#ifdef SIGRTMIN
	for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		if (sigaction(sig, NULL, &old) == 0 &&
		    !(old.sa_flags & SA_SIGINFO) &&
		    old.sa_handler == SIG_DFL)
			sigaction(sig, &sa, NULL);
#else
	(void)sig;
#endif
}

/*
 * One diagnostic, one line: control characters that come from names in
 * a file (a tensor called "a\nb") are printed as \xNN.
 */
static void __attribute__((format(printf, 1, 0)))
vmsg(const char *fmt, va_list ap)
{
	char buf[4096];
	const unsigned char *p;

	cli_progress_end();
	vsnprintf(buf, sizeof(buf), fmt, ap);
	fprintf(stderr, "%s: ", cli_progname);
	for (p = (const unsigned char *)buf; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			fprintf(stderr, "\\x%02x", *p);
		else
			fputc(*p, stderr);
	fputc('\n', stderr);
}

void
cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

int
cli_error(const struct peftio_error *err)
{
	cli_warn("%s", err->msg[0] != '\0' ? err->msg :
	    peftio_status_name(err->code));
	return CLI_EXIT_ERROR;
}

void
cli_info(const char *fmt, ...)
{
	va_list ap;

	if (cli_verbose < 1)
		return;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

void
cli_debug(const char *fmt, ...)
{
	va_list ap;

	if (cli_verbose < 2)
		return;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

void
cli_note(void *arg, const char *msg)
{
	(void)arg;
	cli_debug("%s", msg);
}

int
cli_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max,
    uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9') {
		cli_warn("%s: not a number: %s", opt, s);
		return -1;
	}
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max) {
		cli_warn("%s: %s is not a number from %llu to %llu", opt, s,
		    (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = v;
	return 0;
}

int
cli_parse_double(const char *opt, const char *s, double lo, double hi,
    double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !(v >= lo && v <= hi)) {
		cli_warn("%s: '%s' is not a number in [%g, %g]", opt, s, lo,
		    hi);
		return -1;
	}
	*out = v;
	return 0;
}

int
cli_parse_weights(const char *opt, const char *s, double **out, size_t *n)
{
	const char *p = s;
	double *w;
	char *end;
	size_t k = 1;

	for (; *p != '\0'; p++)
		k += *p == ',';
	free(*out);
	*out = w = xmalloc(k * sizeof(double));
	*n = 0;
	for (p = s;;) {
		errno = 0;
		w[*n] = strtod(p, &end);
		if (end == p || errno != 0 || !isfinite(w[*n]) ||
		    (*end != ',' && *end != '\0')) {
			cli_warn("%s: bad weight list '%s'", opt, s);
			return -1;
		}
		(*n)++;
		if (*end == '\0')
			return 0;
		p = end + 1;
	}
}

void
cli_common_init(struct cli_common *c)
{
	memset(c, 0, sizeof(*c));
	c->jobs = peftio_ncpus();
}

int
cli_common_opt(struct cli_common *c, int ch, const char *arg,
    void (*usage)(int))
{
	uint64_t v;

	switch (ch) {
	case 'f':
		c->force = 1;
		return 1;
	case 'h':
		usage(CLI_EXIT_OK);
		return 1;
	case 'j':
		if (cli_parse_u64("-j", arg, 0, PEFTIO_MAX_JOBS, &v) != 0)
			usage(CLI_EXIT_USAGE);
		c->jobs = v == 0 ? peftio_ncpus() : (unsigned)v;
		return 1;
	case 'o':
		c->out = arg;
		return 1;
	case 'q':
		cli_verbose = 0;
		return 1;
	case 'v':
		cli_verbose = cli_verbose < 1 ? 2 : cli_verbose + 1;
		return 1;
	case CLI_OPT_VERSION:
		printf("%s (peftio) %s\n", cli_progname, peftio_version());
		exit(CLI_EXIT_OK);
	case CLI_OPT_COMPLETION:
		cli_bash_completion(stdout);
		exit(CLI_EXIT_OK);
	}
	return 0;
}

int
cli_common_output(struct cli_common *c, const char *const *in, size_t nin,
    void (*usage)(int))
{
	if (c->out == NULL) {
		if (nin == 0 || strcmp(in[0], "-") != 0) {
			cli_warn("no output given: use -o FILE, -o DIR or "
			    "-o - for standard output");
			usage(CLI_EXIT_USAGE);
		}
		c->out = "-";
	}
	cli_output_name("-o", c->out, usage);
	if (strcmp(c->out, "-") == 0 && isatty(STDOUT_FILENO) && !c->force) {
		cli_warn("standard output is a terminal; not writing a "
		    "checkpoint there (use -f to force)");
		return CLI_EXIT_ERROR;
	}
	return cli_check_clash(c->out, in, nin);
}

void
cli_output_name(const char *opt, const char *out, void (*usage)(int))
{
	static const struct {
		const char	*suffix;
		const char	*what;
	} tab[] = {
		{ ".gguf", "a GGUF file" },
		{ ".bin", "a PyTorch .bin checkpoint" },
	};
	size_t i, n = strlen(out), m;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		m = strlen(tab[i].suffix);
		if (n > m && strcasecmp(out + n - m, tab[i].suffix) == 0) {
			cli_warn("%s %s: named like %s; these tools write "
			    "safetensors only (a .safetensors file or a "
			    "directory)", opt, out, tab[i].what);
			usage(CLI_EXIT_USAGE);
		}
	}
}

int
cli_parse_float_dtype(const char *opt, const char *s)
{
	int dt;

	if ((dt = peftio_dtype_parse_float(s)) >= 0)
		return dt;
	cli_warn("%s: unknown dtype %s (use f32, f16 or bf16)", opt, s);
	return -1;
}


void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL) {
		cli_warn("out of memory (%zu bytes)", n);
		exit(CLI_EXIT_ERROR);
	}
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL) {
		cli_warn("out of memory (%zu bytes)", n * size);
		exit(CLI_EXIT_ERROR);
	}
	return p;
}

int
cli_ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

void *
xscratch(struct peftio_scratch *s, size_t n)
{
	void *p = peftio_scratch(s, n);

	if (p == NULL) {
		cli_warn("out of memory (%zu bytes)", n);
		exit(CLI_EXIT_ERROR);
	}
	return p;
}

/* ------------------------------------------------------------------ */
/* Outputs that would destroy an input                                 */

int
cli_check_clash(const char *out, const char *const *in, size_t nin)
{
	struct peftio_error err;

	if (peftio_output_clash(out, in, nin, &err) != 0)
		return cli_error(&err);
	return 0;
}
