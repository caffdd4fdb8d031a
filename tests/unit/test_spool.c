/*
 * Unit tests for gateway/spool: the file has no name and mode 0600, appends
 * stop at spool_max, the gauges follow the open files, and the bytes come
 * back in order as file segments, as copies, and as copies when no
 * descriptor is left for a segment (RLIMIT_NOFILE at the lowest free
 * descriptor).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/spool.h"
#include "lib/metrics.h"

#define DATA_LEN (300 * 1024)

static char dir[256];
static char data[DATA_LEN];

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    size_t i;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/pop3gw-spool-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    for (i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + (i * 7 + i / 997) % 26);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(dir); /* fails if a spool file kept a name */
}

static int dir_entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Appends data in pieces of 10,000 bytes. */
static void fill(struct spool *sp)
{
    size_t off;

    for (off = 0; off < sizeof(data); off += 10000) {
        size_t n = sizeof(data) - off < 10000 ? sizeof(data) - off : 10000;
        assert_int_equal(spool_append(sp, dir, 1 << 20, data + off, n), SPOOL_OK);
    }
}

/* Feeds everything pending into one evbuffer, `most` at a time, and checks
 * the bytes; returns the number of spool_feed calls. */
static int drain_and_check(struct spool *sp, size_t most, int segments, size_t max_piece)
{
    struct evbuffer *out = evbuffer_new();
    char *got = malloc(sizeof(data));
    int calls = 0;
    long k;

    assert_non_null(out);
    assert_non_null(got);
    while ((k = spool_feed(sp, out, most, segments)) > 0) {
        assert_true((size_t)k <= max_piece);
        calls++;
    }
    assert_int_equal(k, 0);
    assert_int_equal(evbuffer_get_length(out), sizeof(data));
    assert_int_equal(evbuffer_remove(out, got, sizeof(data)), (int)sizeof(data));
    assert_memory_equal(got, data, sizeof(data));
    free(got);
    evbuffer_free(out);
    return calls;
}

static void test_unnamed_0600_and_gauges(void **state)
{
    struct spool sp;
    struct stat st;
    long files0 = atomic_load(&metrics.spool_files);
    long bytes0 = atomic_load(&metrics.spool_bytes);

    (void)state;
    spool_init(&sp);
    assert_int_equal(spool_append(&sp, dir, 1 << 20, data, 1000), SPOOL_OK);
    assert_true(sp.fd >= 0);
    assert_int_equal(fstat(sp.fd, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_nlink, 0);
    assert_int_equal(dir_entries(), 0);
    assert_int_equal(atomic_load(&metrics.spool_files), files0 + 1);
    assert_int_equal(atomic_load(&metrics.spool_bytes), bytes0 + 1000);
    spool_close(&sp);
    assert_int_equal(sp.fd, -1);
    assert_int_equal(atomic_load(&metrics.spool_files), files0);
    assert_int_equal(atomic_load(&metrics.spool_bytes), bytes0);
    spool_close(&sp); /* safe twice */
}

static void test_spool_max(void **state)
{
    struct spool sp;

    (void)state;
    spool_init(&sp);
    assert_int_equal(spool_append(&sp, dir, 1500, data, 1000), SPOOL_OK);
    assert_int_equal(spool_append(&sp, dir, 1500, data, 501), SPOOL_MAX);
    assert_int_equal(sp.size, 1000);
    assert_int_equal(spool_append(&sp, dir, 1500, data, 500), SPOOL_OK);
    assert_int_equal(sp.size, 1500);
    spool_close(&sp);
}

static void test_no_directory(void **state)
{
    struct spool sp;
    char missing[300];

    (void)state;
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    spool_init(&sp);
    assert_int_equal(spool_append(&sp, missing, 1 << 20, data, 10), SPOOL_NOFILE);
    assert_int_equal(sp.fd, -1);
    assert_int_equal(spool_probe(missing), -1);
    assert_int_equal(spool_probe(dir), 0);
    assert_int_equal(dir_entries(), 0);
}

static void test_feed_segments(void **state)
{
    struct spool sp;

    (void)state;
    spool_init(&sp);
    fill(&sp);
    /* One segment per call, as large as asked. */
    assert_int_equal(drain_and_check(&sp, 128 * 1024, 1, 128 * 1024), 3);
    spool_close(&sp);
}

static void test_feed_copies(void **state)
{
    struct spool sp;

    (void)state;
    spool_init(&sp);
    fill(&sp);
    assert_int_equal(drain_and_check(&sp, 64 * 1024, 0, 64 * 1024), 5);
    spool_close(&sp);
}

/* The lowest descriptor number not in use. */
static int lowest_free_fd(void)
{
    int fd = dup(0);

    assert_true(fd >= 0);
    close(fd);
    return fd;
}

static void test_feed_without_descriptors(void **state)
{
    struct spool sp;
    struct rlimit old, low;
    int calls;

    (void)state;
    spool_init(&sp);
    fill(&sp);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)lowest_free_fd();
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    assert_int_equal(fcntl(sp.fd, F_DUPFD_CLOEXEC, 0), -1);
    assert_int_equal(errno, EMFILE);
    /* Segments were asked for, up to 16 MB each: copies of 64 KB instead. */
    calls = drain_and_check(&sp, 16 * 1024 * 1024, 1, 64 * 1024);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(calls, 5);
    spool_close(&sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unnamed_0600_and_gauges),
        cmocka_unit_test(test_spool_max),
        cmocka_unit_test(test_no_directory),
        cmocka_unit_test(test_feed_segments),
        cmocka_unit_test(test_feed_copies),
        cmocka_unit_test(test_feed_without_descriptors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
