/*
 * replay: runs a fuzz target's LLVMFuzzerTestOneInput() over corpus files,
 * without libFuzzer, so that `make test` (and `make san-test`, under the
 * sanitizers) replays every corpus file and a crash once found stays fixed.
 *
 *     fuzz_NAME [-v] FILE|DIR ...
 *
 * A directory is read one level deep, in name order, skipping dot files.
 * Each input is passed in an allocation of exactly its size, so an overread
 * shows under AddressSanitizer. Prints "NAME: N inputs replayed" and exits
 * 0; a failing input aborts (the target's FUZZ_CHECK or a sanitizer) after
 * its path has been printed to stderr.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Under AddressSanitizer: say which input failed before the process dies. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static const char *replay_current; /* the input being run, for messages */
static int replay_verbose;

static void replay_say_current(void)
{
    if (replay_current) {
        static const char pre[] = "replay: failing input: ";
        ssize_t rc = write(2, pre, sizeof(pre) - 1);
        rc += write(2, replay_current, strlen(replay_current));
        rc += write(2, "\n", 1);
        (void)rc;
    }
}

static void replay_on_signal(int sig)
{
    replay_say_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads a whole file into an exact-size buffer. Returns 0 or -1. */
static int replay_read(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *buf;

    if (!f)
        return -1;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
        fclose(f);
        return -1;
    }
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *data = buf;
    *size = (size_t)st.st_size;
    return 0;
}

static int replay_file(const char *path)
{
    uint8_t *data;
    size_t size;

    if (replay_read(path, &data, &size) < 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (replay_verbose)
        fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    replay_current = path;
    LLVMFuzzerTestOneInput(data, size);
    replay_current = NULL;
    free(data);
    return 0;
}

static int replay_skip(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Replays a file, or every regular file of a directory. Returns the number
 * replayed, or -1. */
static long replay_path(const char *path)
{
    struct dirent **list;
    struct stat st;
    long count = 0;
    int n, i;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return replay_file(path) < 0 ? -1 : 1;
    n = scandir(path, &list, replay_skip, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (i = 0; i < n; i++) {
        size_t len = strlen(path) + strlen(list[i]->d_name) + 2;
        char *full = malloc(len);

        if (!full) {
            count = -1;
        } else {
            snprintf(full, len, "%s/%s", path, list[i]->d_name);
            if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
                if (replay_file(full) < 0)
                    count = -1;
                else if (count >= 0)
                    count++;
            }
        }
        free(full);
        free(list[i]);
    }
    free(list);
    return count;
}

int main(int argc, char **argv)
{
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    long total = 0;
    int i, failed = 0;

    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(replay_say_current);
    signal(SIGSEGV, replay_on_signal);
    signal(SIGABRT, replay_on_signal);
    signal(SIGBUS, replay_on_signal);
    signal(SIGFPE, replay_on_signal);
    for (i = 1; i < argc; i++) {
        long n;

        if (strcmp(argv[i], "-v") == 0) {
            replay_verbose = 1;
            continue;
        }
        n = replay_path(argv[i]);
        if (n < 0)
            failed = 1;
        else
            total += n;
    }
    printf("%s: %ld inputs replayed\n", name, total);
    return failed ? 1 : 0;
}
