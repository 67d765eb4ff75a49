/*
 * ckpt_files.c - the files of a model folder besides its tensors:
 * config.json and the like added by the caller, the input's other
 * files copied (training state and nested folders left out, each
 * noted), written beside the shards at commit.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "ckpt_private.h"

#define COPY_BUF	(1u << 20)	/* bytes per step of an added file */

int
peftio_ckptw_file(struct peftio_ckptw *w, const char *name, const void *buf,
    size_t len, struct peftio_error *err)
{
	struct ckptw_file *nf;
	size_t i;

	if (!w->as_dir)
		return 0;
	for (i = 0; i < w->nfiles; i++)
		if (strcmp(w->files[i].name, name) == 0)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: file %s added twice", w->path, name);
	nf = realloc(w->files, (w->nfiles + 1) * sizeof(*nf));
	if (nf == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	w->files = nf;
	nf = &w->files[w->nfiles];
	nf->name = strdup(name);
	nf->data = malloc(len + 1);
	if (nf->name == NULL || nf->data == NULL) {
		free(nf->name);
		free(nf->data);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	memcpy(nf->data, buf, len);
	nf->len = len;
	nf->src = NULL;
	w->nfiles++;
	return 0;
}

/* Files a checkpoint directory holds that a converter must not copy. */
static int
is_checkpoint_file(const char *name)
{
	size_t n = strlen(name);

	return (n > 12 && strcmp(name + n - 12, ".safetensors") == 0) ||
	    (n > 11 && strcmp(name + n - 11, ".index.json") == 0) ||
	    (n > 4 && strcmp(name + n - 4, ".bin") == 0);
}

/*
 * The training state a Hugging Face Trainer saves beside the model in a
 * checkpoint-N folder: of no use to a converted model.
 */
int
peftio_is_training_state(const char *name)
{
	static const char *const names[] = {
		"optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
		"rng_state.pth", "trainer_state.json", "training_args.bin"
	};
	size_t i, n = strlen(name);

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	/* rng_state_<rank>.pth of a run on several processes */
	return n > 14 && strncmp(name, "rng_state_", 10) == 0 &&
	    strcmp(name + n - 4, ".pth") == 0 &&
	    strspn(name + 10, "0123456789") == n - 14;
}

void
peftio_ckptw_set_note(struct peftio_ckptw *w, peftio_note_fn fn, void *arg)
{
	w->note = fn;
	w->note_arg = arg;
}

static void	note(const struct peftio_ckptw *w, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

static void
note(const struct peftio_ckptw *w, const char *fmt, ...)
{
	char msg[PEFTIO_ERRMSG_MAX];
	va_list ap;

	if (w->note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	w->note(w->note_arg, msg);
}

/* Add file p (a regular file) as name, to be copied at commit. */
static int
add_copy(struct peftio_ckptw *w, const char *name, char *p,
    struct peftio_error *err)
{
	struct ckptw_file *nf;

	nf = realloc(w->files, (w->nfiles + 1) * sizeof(*nf));
	if (nf == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	w->files = nf;
	nf = &w->files[w->nfiles];
	if ((nf->name = strdup(name)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	nf->data = NULL;
	nf->len = 0;
	nf->src = p;
	w->nfiles++;
	return 0;
}

int
peftio_ckptw_copy_aux(struct peftio_ckptw *w, const char *dir,
    struct peftio_error *err)
{
	struct dirent *de;
	struct stat sb;
	char *p;
	size_t i;
	DIR *d;
	int rc = 0, have;

	if (!w->as_dir || dir == NULL)
		return 0;
	if ((d = opendir(dir)) == NULL)
		return peftio_error_sys(err, "%s", dir);
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (peftio_is_training_state(de->d_name)) {
			note(w, "%s/%s: training state, not copied", dir,
			    de->d_name);
			continue;
		}
		if (is_checkpoint_file(de->d_name))
			continue;
		for (i = 0, have = 0; i < w->nfiles; i++)
			if (strcmp(w->files[i].name, de->d_name) == 0)
				have = 1;
		if (have)
			continue;
		if ((p = peftio_path_join(dir, de->d_name)) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			break;
		}
		/* Followed: a Hugging Face cache links each file to a blob. */
		if (stat(p, &sb) != 0) {
			if (errno == ENOENT && lstat(p, &sb) == 0)
				rc = peftio_error_set(err, PEFTIO_ENOTFOUND,
				    "%s: a symbolic link to a missing file "
				    "(an incomplete download?)", p);
			else
				rc = peftio_error_sys(err, "%s", p);
			free(p);
			break;
		}
		if (S_ISDIR(sb.st_mode)) {
			note(w, "%s/: a subfolder, not copied", p);
			free(p);
			continue;
		}
		if (!S_ISREG(sb.st_mode)) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: not a regular file (a device, pipe or "
			    "socket), cannot be copied with the model", p);
			free(p);
			break;
		}
		if ((rc = add_copy(w, de->d_name, p, err)) != 0)
			free(p);
	}
	closedir(d);
	return rc;
}

/* Copy file src to dst a piece at a time, through a temporary file. */
static int
copy_file(const char *src, const char *dst, unsigned flags,
    struct peftio_error *err)
{
	struct peftio_outfile of;
	struct stat sb;
	unsigned char *buf;
	uint64_t off = 0;
	ssize_t n;
	int fd, rc;

	if ((fd = open(src, O_RDONLY | O_CLOEXEC)) < 0)
		return peftio_error_sys(err, "%s", src);
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: not a regular file", src);
	}
	if ((buf = malloc(COPY_BUF)) == NULL) {
		close(fd);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	if ((rc = peftio_outfile_open(&of, dst, flags, err)) != 0)
		goto out;
	for (;;) {
		if ((n = read(fd, buf, COPY_BUF)) < 0) {
			if (errno == EINTR)
				continue;
			rc = peftio_error_sys(err, "%s", src);
			break;
		}
		if (n == 0)
			break;
		if ((rc = peftio_outfile_pwrite(&of, buf, (size_t)n, off,
		    err)) != 0)
			break;
		off += (uint64_t)n;
	}
	if (rc != 0)
		peftio_outfile_abort(&of);
	else
		rc = peftio_outfile_commit(&of, err);
out:
	free(buf);
	close(fd);
	return rc;
}

/* The added files, into directory dir. */
int
peftio_ckptw_write_files(struct peftio_ckptw *w, const char *dir, unsigned flags,
    struct peftio_error *err)
{
	size_t i;
	char *p;
	int rc;

	for (i = 0; i < w->nfiles; i++) {
		if ((p = peftio_path_join(dir, w->files[i].name)) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		if (w->files[i].src != NULL)
			rc = copy_file(w->files[i].src, p, flags, err);
		else
			rc = peftio_write_file(p, w->files[i].data,
			    w->files[i].len, flags, err);
		free(p);
		if (rc != 0)
			return rc;
	}
	return 0;
}
