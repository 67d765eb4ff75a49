/*
 * outdir.c - atomic output directories, built under a temporary name
 * beside the destination and swapped into place (outfile.c has the
 * files, the registry of temporary paths and the helpers both use);
 * and small whole files written atomically or read with a limit.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "outfile_private.h"

/* ------------------------------------------------------------------ */
/* Output directories                                                  */
/* ------------------------------------------------------------------ */

/*
 * The names a checkpoint directory holds: what the tools write (shards,
 * the index, configuration) and what they copy from a model folder
 * (tokenizer files, chat templates, licences, model cards, code).
 */
int
peftio_ckpt_dir_file(const char *name)
{
	static const char *const suffix[] = {
		".safetensors", ".bin", ".json", ".txt", ".model", ".jinja",
		".tiktoken", ".md", ".py", ".vocab", ".pt", ".pth", ".ckpt",
		".msgpack", ".h5", ".onnx", ".gguf"
	};
	static const char *const whole[] = { "LICENSE", "NOTICE", "README" };
	size_t i, n = strlen(name), m;

	if (name[0] == '.' || n == 0)
		return 0;
	if (strncmp(name, "tokenizer.", 10) == 0)	/* tokenizer.model.v3 */
		return 1;
	for (i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
		if (strcmp(name, whole[i]) == 0)
			return 1;
	for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		m = strlen(suffix[i]);
		if (n > m && strcmp(name + n - m, suffix[i]) == 0)
			return 1;
	}
	return 0;
}

/*
 * May -f replace dest?  Only a directory whose entries are all regular
 * files with checkpoint names: never a file, a link, a device, nor a
 * directory that holds anything else (a mistyped -o ~ costs nothing).
 */
static int
replaceable(const char *dest, struct peftio_error *err)
{
	struct dirent *de;
	struct stat sb;
	char *p;
	size_t n;
	int rc = 0;
	DIR *d;

	if (lstat(dest, &sb) != 0)
		return errno == ENOENT ? 0 : peftio_error_sys(err, "%s", dest);
	if (!S_ISDIR(sb.st_mode))
		return peftio_error_set(err, PEFTIO_EEXIST,
		    "%s: exists and is not a directory: not replacing it "
		    "with one (remove it first)", dest);
	if ((d = opendir(dest)) == NULL)
		return peftio_error_sys(err, "%s", dest);
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		n = strlen(dest) + strlen(de->d_name) + 2;
		if ((p = malloc(n)) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", dest);
			break;
		}
		snprintf(p, n, "%s/%s", dest, de->d_name);
		if (lstat(p, &sb) != 0)
			rc = errno == ENOENT ? 0 : peftio_error_sys(err, "%s", p);
		else if (!S_ISREG(sb.st_mode) ||
		    !peftio_ckpt_dir_file(de->d_name))
			rc = peftio_error_set(err, PEFTIO_EEXIST,
			    "%s: holds %s, which is no checkpoint file: not "
			    "replacing it (remove it first)", dest, p);
		free(p);
	}
	closedir(d);
	return rc;
}

int
peftio_outdir_open(struct peftio_outdir *od, const char *dest,
    unsigned flags, struct peftio_error *err)
{
	struct stat sb;
	sigset_t old;
	char *ok;
	size_t len;
	int rc;

	od->dest = NULL;
	od->tmp = NULL;
	od->slot = -1;
	od->flags = flags;
	if (dest == NULL || *dest == '\0' || strcmp(dest, "-") == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "'%s': not a directory name", dest != NULL ? dest : "");
	if ((od->dest = strdup(dest)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", dest);
	len = strlen(od->dest);
	while (len > 1 && od->dest[len - 1] == '/')
		od->dest[--len] = '\0';
	if (strcmp(od->dest, "/") == 0) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "/: cannot replace the root directory");
		goto fail;
	}
	if (lstat(od->dest, &sb) == 0) {
		if (!(flags & PEFTIO_W_FORCE)) {
			rc = peftio_error_set(err, PEFTIO_EEXIST,
			    "%s: already exists (use -f to overwrite)",
			    od->dest);
			goto fail;
		}
		if ((rc = replaceable(od->dest, err)) != 0)
			goto fail;
	} else if (errno != ENOENT) {
		rc = peftio_error_sys(err, "%s", od->dest);
		goto fail;
	}
	if ((od->tmp = peftio_out_temp_name(od->dest, "tmp")) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    od->dest);
		goto fail;
	}
	peftio_out_block_signals(&old);
	ok = mkdtemp(od->tmp);
	if (ok != NULL)
		od->slot = peftio_temp_register(od->tmp, 1);
	peftio_out_restore_signals(&old);
	if (ok == NULL) {
		rc = peftio_error_sys(err,
		    "%s: cannot create temporary directory %s", od->dest,
		    od->tmp);
		free(od->tmp);
		od->tmp = NULL;
		goto fail;
	}
	if (chmod(od->tmp, peftio_out_file_mode(0777)) != 0) {
		rc = peftio_error_sys(err, "%s: chmod", od->tmp);
		goto fail;
	}
	return 0;
fail:
	peftio_outdir_abort(od);
	return rc;
}

/* Move dest aside and tmp into its place, without RENAME_EXCHANGE.
 * On success *aside names the old tree (to be removed). */
static int
swap_fallback(struct peftio_outdir *od, char **aside)
{
	int saved;

	if ((*aside = peftio_out_temp_name(od->dest, "old")) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	if (mkdtemp(*aside) == NULL || rmdir(*aside) != 0)
		goto fail;
	if (rename(od->dest, *aside) != 0)
		goto fail;
	if (rename(od->tmp, od->dest) != 0) {
		saved = errno;
		(void)rename(*aside, od->dest);
		errno = saved;
		goto fail;
	}
	return 0;
fail:
	free(*aside);
	*aside = NULL;
	return -1;
}

int
peftio_outdir_commit(struct peftio_outdir *od, struct peftio_error *err)
{
	struct stat sb;
	char *aside = NULL;
	int rc = 0, exists;

	if (od->tmp == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: output directory is not open",
		    od->dest != NULL ? od->dest : "?");
	if (!(od->flags & PEFTIO_W_NOSYNC) && peftio_out_fsync_dir(od->tmp) != 0) {
		rc = peftio_error_sys(err, "%s: fsync", od->tmp);
		goto fail;
	}
	exists = lstat(od->dest, &sb) == 0;
	if (exists && !(od->flags & PEFTIO_W_FORCE)) {
		rc = peftio_error_set(err, PEFTIO_EEXIST,
		    "%s: already exists (use -f to overwrite)", od->dest);
		goto fail;
	}
	/* Checked again: the directory may have changed since open. */
	if (exists && (rc = replaceable(od->dest, err)) != 0)
		goto fail;
	if (!exists) {
		if (peftio_out_rename_noreplace(od->tmp, od->dest, 1) != 0) {
			if (errno == EEXIST)
				rc = peftio_error_set(err, PEFTIO_EEXIST,
				    "%s: already exists (use -f to overwrite)",
				    od->dest);
			else
				rc = peftio_error_sys(err,
				    "%s: cannot rename %s", od->dest, od->tmp);
			goto fail;
		}
		peftio_out_drop_children(od->tmp);
		peftio_temp_unregister(od->slot);
		od->slot = -1;
		free(od->tmp);
		od->tmp = NULL;
	} else {
#ifdef RENAME_EXCHANGE
		/* Swap atomically: the old tree ends up at the temp name. */
		if (renameat2(AT_FDCWD, od->tmp, AT_FDCWD, od->dest,
		    RENAME_EXCHANGE) == 0) {
			peftio_out_drop_children(od->tmp);
			aside = od->tmp;
			od->tmp = NULL;
		} else if (errno != EINVAL && errno != ENOSYS &&
		    errno != EOPNOTSUPP) {
			rc = peftio_error_sys(err, "%s: cannot replace",
			    od->dest);
			goto fail;
		}
#endif
		if (od->tmp != NULL) {
			if (swap_fallback(od, &aside) != 0) {
				rc = peftio_error_sys(err,
				    "%s: cannot replace", od->dest);
				goto fail;
			}
			peftio_out_drop_children(od->tmp);
			free(od->tmp);
			od->tmp = NULL;
		}
		/* The old tree: the slot still covers its top directory. */
		(void)peftio_out_rmtree(aside);
		free(aside);
		peftio_temp_unregister(od->slot);
		od->slot = -1;
	}
	if (!(od->flags & PEFTIO_W_NOSYNC) && peftio_out_fsync_parent(od->dest) != 0)
		rc = peftio_error_sys(err, "%s: fsync of the directory",
		    od->dest);
fail:
	peftio_outdir_abort(od);
	return rc;
}

void
peftio_outdir_abort(struct peftio_outdir *od)
{
	if (od == NULL)
		return;
	if (od->tmp != NULL) {
		peftio_out_drop_children(od->tmp);
		(void)peftio_out_rmtree(od->tmp);
		free(od->tmp);
		od->tmp = NULL;
	}
	peftio_temp_unregister(od->slot);
	od->slot = -1;
	free(od->dest);
	od->dest = NULL;
}

/* ------------------------------------------------------------------ */
/* Small whole files                                                   */
/* ------------------------------------------------------------------ */

int
peftio_write_file(const char *path, const void *buf, size_t len,
    unsigned flags, struct peftio_error *err)
{
	struct peftio_outfile of;
	int rc;

	if ((rc = peftio_outfile_open(&of, path, flags, err)) != 0)
		return rc;
	if ((rc = peftio_outfile_pwrite(&of, buf, len, 0, err)) != 0) {
		peftio_outfile_abort(&of);
		return rc;
	}
	return peftio_outfile_commit(&of, err);
}

int
peftio_read_file(const char *path, size_t max, char **bufp, size_t *lenp,
    struct peftio_error *err)
{
	const char *name = strcmp(path, "-") == 0 ? "<stdin>" : path;
	struct stat sb;
	size_t cap = 0, len = 0;
	char *buf = NULL, *nb;
	long long n;
	int fd, rc;

	*bufp = NULL;
	if (lenp != NULL)
		*lenp = 0;
	if (strcmp(path, "-") == 0)
		fd = STDIN_FILENO;
	else if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return peftio_error_sys(err, "%s", path);
	if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		rc = peftio_error_set(err, PEFTIO_EINVAL, "%s: is a directory",
		    name);
		goto out;
	}
	if (max > SIZE_MAX - 2)
		max = SIZE_MAX - 2;
	/* Grow the buffer by doubling up to max + 1 bytes (one too many). */
	for (;;) {
		if (len == cap) {
			if (cap > max) {
				rc = peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: larger than %zu bytes", name, max);
				goto out;
			}
			if (cap == 0)
				cap = PEFTIO_MIN(max + 1, (size_t)65536);
			else
				cap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "%s: out of memory", name);
				goto out;
			}
			buf = nb;
		}
		if ((n = peftio_read_all(fd, buf + len, cap - len)) < 0) {
			rc = peftio_error_sys(err, "%s: read error", name);
			goto out;
		}
		len += (size_t)n;
		if (len < cap)
			break;
	}
	buf[len] = '\0';
	*bufp = buf;
	buf = NULL;
	if (lenp != NULL)
		*lenp = len;
	rc = 0;
out:
	free(buf);
	if (fd != STDIN_FILENO)
		close(fd);
	return rc;
}

int
peftio_read_config(const char *dir, char **text, size_t *len,
    struct peftio_error *err)
{
	size_t n = strlen(dir) + sizeof("/config.json");
	char *path;
	int rc;

	*text = NULL;
	if ((path = malloc(n)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	snprintf(path, n, "%s/config.json", dir);
	if (access(path, F_OK) != 0) {
		free(path);
		return 0;
	}
	rc = peftio_read_file(path, 64u << 20, text, len, err);
	free(path);
	return rc == 0 ? 1 : rc;
}
