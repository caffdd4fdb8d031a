/*
 * Unit tests for admin/snapshot: latency quantiles from histogram buckets
 * (hist_snap_quantile, hist_snap_merge), with every expected value worked
 * out by hand from the bucket bounds in lib/metrics.c, and the bucket an
 * observation lands in (metrics_observe).
 *
 * Bucket upper bounds, in seconds (index: bound):
 *   0: 0.001  1: 0.0025  2: 0.005  3: 0.01  4: 0.025  5: 0.05
 *   6: 0.1    7: 0.25    8: 0.5    9: 1    10: 2.5   11: 10   12: +Inf
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "admin/snapshot.h"
#include "lib/metrics.h"

/* Asserts |got - want| <= 1e-12 (the quantiles are a few divisions away
 * from exact). */
#define assert_near(got, want)                                                                     \
    do {                                                                                           \
        double g_ = (got), w_ = (want), d_ = g_ - w_;                                              \
        if (d_ < -1e-12 || d_ > 1e-12)                                                             \
            fail_msg("%s = %.15g, expected %.15g", #got, g_, w_);                                  \
    } while (0)

/* A histogram from (bucket, count) pairs; count is their sum, as in a
 * snapshot. */
static struct hist_snap hist(const int (*pairs)[2], size_t n, double sum)
{
    struct hist_snap h;
    size_t i;

    memset(&h, 0, sizeof(h));
    for (i = 0; i < n; i++) {
        h.bucket[pairs[i][0]] += (unsigned long)pairs[i][1];
        h.count += (unsigned long)pairs[i][1];
    }
    h.sum = sum;
    return h;
}

#define HIST(pairs, sum) hist(pairs, sizeof(pairs) / sizeof(pairs[0]), sum)

/* The table and the comment above agree. */
static void test_bounds(void **state)
{
    static const double want[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,   0.25,   0.5,   1,    2.5,   10};
    int i;

    (void)state;
    for (i = 0; i < METRICS_BUCKETS; i++)
        assert_near(metrics_bucket_bounds[i], want[i]);
}

/* No observation: negative, whatever q. */
static void test_empty(void **state)
{
    struct hist_snap h;

    (void)state;
    memset(&h, 0, sizeof(h));
    assert_true(hist_snap_quantile(&h, 0.5) < 0);
    assert_true(hist_snap_quantile(&h, 0.01) < 0);
    assert_true(hist_snap_quantile(&h, 0.99) < 0);
}

/* Four observations in [0, 0.001]: the first bucket starts at 0, so rank r
 * of 4 sits at 0.001 * r / 4. */
static void test_first_bucket(void **state)
{
    static const int b[][2] = {{0, 4}};
    struct hist_snap h = HIST(b, 0.002);

    (void)state;
    assert_near(hist_snap_quantile(&h, 0.5), 0.0005);   /* rank 2 */
    assert_near(hist_snap_quantile(&h, 0.25), 0.00025); /* rank 1 */
    assert_near(hist_snap_quantile(&h, 0.99), 0.00099); /* rank 3.96 */
}

/* Ten in (0.0025, 0.005], ten in (0.025, 0.05]: linear within a bucket,
 * empty buckets in between skipped. */
static void test_interpolation(void **state)
{
    static const int b[][2] = {{2, 10}, {5, 10}};
    struct hist_snap h = HIST(b, 0.4);

    (void)state;
    /* rank 5 of the first ten: 0.0025 + 0.0025 * 5/10 */
    assert_near(hist_snap_quantile(&h, 0.25), 0.00375);
    /* rank 10 ends the first bucket: its upper bound */
    assert_near(hist_snap_quantile(&h, 0.5), 0.005);
    /* rank 15: 5 into the second ten, 0.025 + 0.025 * 5/10 */
    assert_near(hist_snap_quantile(&h, 0.75), 0.0375);
    /* rank 19: 0.025 + 0.025 * 9/10 */
    assert_near(hist_snap_quantile(&h, 0.95), 0.0475);
}

/* Past the last finite bound there is nothing to interpolate: the answer
 * is that bound, 10 s. */
static void test_inf_bucket(void **state)
{
    static const int b[][2] = {{0, 1}, {METRICS_BUCKETS, 3}};
    static const int only[][2] = {{METRICS_BUCKETS, 2}};
    struct hist_snap h = HIST(b, 60.0005);
    struct hist_snap o = HIST(only, 40);

    (void)state;
    assert_near(hist_snap_quantile(&h, 0.25), 0.001); /* rank 1: all of bucket 0 */
    assert_near(hist_snap_quantile(&h, 0.5), 10);     /* rank 2 */
    assert_near(hist_snap_quantile(&h, 0.99), 10);
    assert_near(hist_snap_quantile(&o, 0.01), 10);
    assert_near(hist_snap_quantile(&o, 0.5), 10);
}

/* q close to 0 lands at the lower bound of the first non-empty bucket, q
 * close to 1 at the upper bound of the last one. */
static void test_extreme_q(void **state)
{
    static const int b[][2] = {{3, 100}};
    static const int two[][2] = {{1, 1}, {9, 1}};
    struct hist_snap h = HIST(b, 0.75);
    struct hist_snap t = HIST(two, 0.502);

    (void)state;
    /* rank 0.01 of 100 in (0.005, 0.01]: 0.005 + 0.005 * 0.0001 */
    assert_near(hist_snap_quantile(&h, 0.0001), 0.0050005);
    /* rank 99.99: 0.005 + 0.005 * 0.9999 */
    assert_near(hist_snap_quantile(&h, 0.9999), 0.0099995);
    assert_near(hist_snap_quantile(&h, 1e-12), 0.005 + 0.005 * 1e-12);
    assert_near(hist_snap_quantile(&h, 1 - 1e-12), 0.01 - 0.005 * 1e-12);
    /* One in (0.001, 0.0025], one in (0.5, 1]: the empty buckets around
     * them do not pull the ends. */
    assert_near(hist_snap_quantile(&t, 1e-9), 0.001 + 0.0015 * 2e-9);
    assert_near(hist_snap_quantile(&t, 1 - 1e-9), 0.5 + 0.5 * (1 - 2e-9));
}

/* Merging adds buckets, counts and sums; the quantile of the merge is that
 * of all the observations together. */
static void test_merge(void **state)
{
    static const int a[][2] = {{0, 2}, {4, 1}};
    static const int b[][2] = {{4, 3}, {METRICS_BUCKETS, 1}};
    struct hist_snap ha = HIST(a, 0.02), hb = HIST(b, 12.5), m;
    int i;

    (void)state;
    memset(&m, 0, sizeof(m));
    hist_snap_merge(&m, &ha);
    assert_memory_equal(&m, &ha, sizeof(m));
    hist_snap_merge(&m, &hb);
    for (i = 0; i <= METRICS_BUCKETS; i++) {
        unsigned long want = i == 0 ? 2 : i == 4 ? 4 : i == METRICS_BUCKETS ? 1 : 0;
        assert_int_equal(m.bucket[i], want);
    }
    assert_int_equal(m.count, 7);
    assert_near(m.sum, 12.52);
    /* rank 3.5: 1.5 into the four of (0.01, 0.025]: 0.01 + 0.015 * 1.5/4 */
    assert_near(hist_snap_quantile(&m, 0.5), 0.015625);
    /* rank 6.3 is past the six finite ones */
    assert_near(hist_snap_quantile(&m, 0.9), 10);
    /* the operands are unchanged */
    assert_int_equal(hb.count, 4);
    assert_int_equal(hb.bucket[4], 3);
}

/* An observation goes to the first bucket whose bound it does not exceed
 * (Prometheus's `le`); past 10 s, to +Inf. */
static void test_observe(void **state)
{
    static const struct {
        double seconds;
        int bucket;
    } t[] = {
        {0, 0},
        {0.001, 0},
        {0.0010001, 1},
        {0.0025, 1},
        {0.003, 2},
        {0.7, 9},
        {1, 9},
        {2.5, 10},
        {10, 11},
        {10.0000001, METRICS_BUCKETS},
        {3600, METRICS_BUCKETS},
    };
    size_t i;
    int b;

    (void)state;
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct metrics_hist h;
        memset(&h, 0, sizeof(h));
        metrics_observe(&h, t[i].seconds);
        for (b = 0; b <= METRICS_BUCKETS; b++)
            if (atomic_load(&h.bucket[b]) != (b == t[i].bucket ? 1u : 0u))
                fail_msg("%g s: bucket %d holds %lu", t[i].seconds, b,
                         (unsigned long)atomic_load(&h.bucket[b]));
        assert_int_equal(atomic_load(&h.count), 1);
        assert_int_equal(atomic_load(&h.sum_us), (unsigned long)(t[i].seconds * 1e6));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),       cmocka_unit_test(test_empty),
        cmocka_unit_test(test_first_bucket), cmocka_unit_test(test_interpolation),
        cmocka_unit_test(test_inf_bucket),   cmocka_unit_test(test_extreme_q),
        cmocka_unit_test(test_merge),        cmocka_unit_test(test_observe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
