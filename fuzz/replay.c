/* Runs saved inputs through a fuzz target without libFuzzer, so that any
 * compiler builds it: every regular file of each directory named on the
 * command line (in name order, names starting with '.' skipped), or a file
 * named directly, goes through LLVMFuzzerTestOneInput once. CTest runs it
 * on fuzz/corpus/<target> and fuzz/regressions/<target>; a failed check
 * aborts it, after the name of the input has been printed.
 *
 *   fuzz_replay_<target> DIR|FILE...
 *
 * Exits 0 when every input ran, 1 when there was nothing to run or a file
 * could not be read. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz/fuzz.h"

/* The whole file in one allocation of exactly its size (see fuzz_dup). */
static int read_file(const char *path, char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -errno;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *grown = realloc(buf, cap *= 2);
        if (grown == NULL)
            free(buf);
        buf = grown;
    }
    int failed = buf == NULL ? -ENOMEM : ferror(f) ? -EIO : 0;
    fclose(f);
    if (failed < 0) {
        free(buf);
        return failed;
    }
    *data = fuzz_dup(buf, n);
    *size = n;
    free(buf);
    return 0;
}

static int run_file(const char *path)
{
    char *data = NULL;
    size_t size = 0;
    int rc = read_file(path, &data, &size);
    if (rc < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(-rc));
        return rc;
    }
    /* named first: a failed check aborts the process */
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    LLVMFuzzerTestOneInput((const uint8_t *)data, size);
    free(data);
    return 0;
}

static int skip_dot(const struct dirent *e) { return e->d_name[0] != '.'; }

/* Runs what path names; returns how many inputs ran, or -1 on an error. */
static long run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path) < 0 ? -1 : 1;
    struct dirent **names;
    int n = scandir(path, &names, skip_dot, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    long ran = 0;
    for (int i = 0; i < n; i++) {
        char file[4096];
        snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
        if (ran >= 0 && stat(file, &st) == 0 && S_ISREG(st.st_mode))
            ran = run_file(file) < 0 ? -1 : ran + 1;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    long total = 0;
    for (int i = 1; i < argc; i++) {
        long ran = run_path(argv[i]);
        if (ran < 0)
            return 1;
        printf("%s: %ld input(s)\n", argv[i], ran);
        total += ran;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no inputs\n");
        return 1;
    }
    printf("replayed %ld input(s), every check held\n", total);
    return 0;
}
