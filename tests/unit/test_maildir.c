/*
 * Unit tests for the maildir backend's pure parts: Standard Webhooks
 * signatures, base64, CRLF-normalised sizes (fed whole and byte by byte),
 * uids, listings of a real temporary Maildir, the users file, locks and the
 * size cache.
 *
 * The backend is its own program, so its sources are compiled in here
 * rather than linked (the unit-test rule links only the gateway's objects).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/maildir/digest.c"
#include "backends/maildir/locks.c"
#include "backends/maildir/note.c"
#include "backends/maildir/sizes.c"
#include "backends/maildir/store.c"
#include "backends/maildir/users.c"
#include "backends/maildir/whsig.c"

/* ---- helpers ---- */

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* A fresh temporary directory; removed by rm_tree. */
static char *make_tmp(void)
{
    char *dir = strdup("/tmp/test_maildir.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void rm_tree(char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

/* ---- whsig ---- */

#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS "1614265330"
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void test_whsig_vector(void **state)
{
    (void)state;
    unsigned char key[64];
    char out[WHSIG_B64_LEN + 1];
    long n = dg_base64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32, key, sizeof key);
    assert_int_equal(n, 24);
    assert_int_equal(whsig_sign(key, (size_t)n, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out),
                     0);
    assert_string_equal(out, VEC_SIG + 3);
}

static void test_whsig_verify(void **state)
{
    (void)state;
    char err[256];
    time_t t = 1614265330;
    size_t len = strlen(VEC_BODY);
    struct whsig *w = whsig_new("whsec_b3RoZXI= " VEC_SECRET, err, sizeof err);
    assert_non_null(w);
    assert_null(whsig_verify(w, VEC_ID, VEC_TS, VEC_SIG, VEC_BODY, len, t));
    assert_null(whsig_verify(w, VEC_ID, VEC_TS, "v1,bad v2,x " VEC_SIG, VEC_BODY, len, t + 300));
    assert_non_null(whsig_verify(w, VEC_ID, VEC_TS, VEC_SIG, VEC_BODY, len, t + 301));
    assert_non_null(whsig_verify(w, VEC_ID, VEC_TS, VEC_SIG, VEC_BODY, len, t - 301));
    assert_non_null(whsig_verify(w, VEC_ID, VEC_TS, VEC_SIG, "{\"test\": 2432232315}", len, t));
    assert_non_null(whsig_verify(w, "msg_other", VEC_TS, VEC_SIG, VEC_BODY, len, t));
    assert_non_null(whsig_verify(w, VEC_ID, "1614265330x", VEC_SIG, VEC_BODY, len, t));
    assert_non_null(whsig_verify(w, VEC_ID, VEC_TS, NULL, VEC_BODY, len, t));
    assert_non_null(whsig_verify(w, NULL, VEC_TS, VEC_SIG, VEC_BODY, len, t));
    whsig_free(w);
    assert_null(whsig_new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", err, sizeof err));
    assert_null(whsig_new("whsec_!!!", err, sizeof err));
    assert_null(whsig_new("  ", err, sizeof err));
}

static void test_base64(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dg_base64_decode("aGk=", 4, out, sizeof out), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(dg_base64_decode("aGk", 3, out, sizeof out), 2);
    assert_int_equal(dg_base64_decode("aGVsbG8h", 8, out, sizeof out), 6);
    assert_memory_equal(out, "hello!", 6);
    assert_int_equal(dg_base64_decode("a", 1, out, sizeof out), -1);
    assert_int_equal(dg_base64_decode("a*b=", 4, out, sizeof out), -1);
    assert_int_equal(dg_base64_decode("aGVsbG8h", 8, out, 5), -1);
}

/* ---- sizes and uids ---- */

static const struct {
    const char *in;
    uint64_t want;
} size_cases[] = {
    {"", 0},
    {"a", 3},               /* a CRLF added at the end */
    {"a\n", 3},             /* bare LF counts as CRLF */
    {"a\r\n", 3},           /* CRLF stays */
    {"a\r\nb", 6},          /* last line completed */
    {"\n\n", 4},            /* empty lines */
    {"\r\n\n", 4},          /* CRLF, then a bare LF */
    {"a\rb\n", 5},          /* a lone CR is one octet */
    {"x\r", 4},             /* ends without LF: +2 */
    {"H: v\n\n.dot\n", 14}, /* dots are not stuffed in the size */
};

static void test_sizer(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof size_cases / sizeof size_cases[0]; i++) {
        const char *in = size_cases[i].in;
        size_t len = strlen(in);
        struct store_sizer whole, bytes;
        store_sizer_init(&whole);
        store_sizer_feed(&whole, in, len);
        store_sizer_init(&bytes);
        for (size_t j = 0; j < len; j++)
            store_sizer_feed(&bytes, in + j, 1);
        assert_int_equal(store_sizer_total(&whole), size_cases[i].want);
        assert_int_equal(store_sizer_total(&bytes), size_cases[i].want);
    }
}

static void test_uid(void **state)
{
    (void)state;
    char uid[STORE_UID_MAX + 1], name[100];
    store_uid("1700000000.M1P2.host", uid);
    assert_string_equal(uid, "1700000000.M1P2.host");
    store_uid("1700000000.M1P2.host:2,S", uid);
    assert_string_equal(uid, "1700000000.M1P2.host");
    store_uid(":2,S", uid); /* empty base name: MD5 of "" */
    assert_string_equal(uid, "d41d8cd98f00b204e9800998ecf8427e");
    store_uid("has space", uid);
    assert_int_equal(strlen(uid), 32);
    memset(name, 'x', 70);
    name[70] = '\0';
    store_uid(name, uid);
    assert_string_equal(uid, name);
    name[70] = 'x';
    name[71] = '\0';
    store_uid(name, uid);
    assert_int_equal(strlen(uid), 32);
    store_uid("caf\xc3\xa9", uid); /* not ASCII */
    assert_int_equal(strlen(uid), 32);
}

/* ---- listings ---- */

static void test_store_list(void **state)
{
    (void)state;
    char *root = make_tmp(), p[512], err[256];
    const char *dirs[] = {"u", "u/new", "u/cur", "u/tmp"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
    }
#define PUT(rel, data)                                                                             \
    do {                                                                                           \
        snprintf(p, sizeof p, "%s/u/%s", root, rel);                                               \
        write_file(p, data, strlen(data));                                                         \
    } while (0)
    PUT("new/300.c", "c\n");
    PUT("cur/100.a:2,S", "aa\r\n");
    PUT("new/200.b", "");
    PUT("new/.hidden", "x\n");
    PUT("cur/300.c:2,", "dup\n"); /* same uid as new/300.c: left out */
    PUT("tmp/050.t", "in delivery\n");
    snprintf(p, sizeof p, "%s/u/new/150.link", root);
    assert_int_equal(symlink("/etc/hostname", p), 0);

    struct store *s = store_open(root, err, sizeof err);
    assert_non_null(s);
    struct store_list l;
    assert_int_equal(store_list(s, "u", 1, &l), STORE_OK);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.msgs[0].uid, "100.a");
    assert_int_equal(l.msgs[0].size, 4);
    assert_string_equal(l.msgs[1].uid, "200.b");
    assert_int_equal(l.msgs[1].size, 0);
    assert_string_equal(l.msgs[2].uid, "300.c");
    assert_string_equal(l.msgs[2].name, "300.c"); /* "300.c" sorts before "300.c:2," */
    assert_int_equal(l.msgs[2].size, 3);
    assert_ptr_equal(store_find(&l, "200.b"), &l.msgs[1]);
    assert_null(store_find(&l, "nope"));

    uint64_t bytes = 0;
    int fd = store_open_msg(s, "u", &l.msgs[0], &bytes);
    assert_true(fd >= 0);
    assert_int_equal(bytes, 4);
    close(fd);
    assert_int_equal(store_unlink(s, "u", &l.msgs[2]), 0);
    assert_int_equal(store_unlink(s, "u", &l.msgs[2]), -ENOENT);
    store_list_free(&l);

    /* The duplicate that was left out now shows, from cur/. */
    assert_int_equal(store_list(s, "u", 1, &l), STORE_OK);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.msgs[2].name, "300.c:2,");
    assert_int_equal(l.msgs[2].size, 5);
    store_list_free(&l);

    assert_int_equal(store_list(s, "nobody", 0, &l), STORE_NO_USER);
    store_list_free(&l);
    store_free(s);
    rm_tree(root);
#undef PUT
}

/* ---- users ---- */

static void test_users(void **state)
{
    (void)state;
    char *dir = make_tmp(), path[512], err[256], canon[USERS_NAME_MAX + 1];
    const char *text = "# comment\n"
                       "\n"
                       "alice:pw one\r\n"
                       "bob:secret:tok-bob\n"
                       "carol::tok-carol\n"
                       ".bad:x\n"
                       "no-colon\n"
                       "alice:second\n";
    snprintf(path, sizeof path, "%s/users", dir);
    write_file(path, text, strlen(text));
    struct users *u = users_open(path, err, sizeof err);
    assert_non_null(u);

    struct users_cred c = {
        .method = USERS_PASSWORD, .user = "alice", .secret = "pw one", .secret_len = 6};
    assert_int_equal(users_check(u, &c, canon), 1);
    assert_string_equal(canon, "alice");
    c.secret = "second";
    assert_int_equal(users_check(u, &c, canon), 0); /* the first line wins */
    c.user = "Alice";
    c.secret = "pw one";
    assert_int_equal(users_check(u, &c, canon), 0); /* names match exactly */
    c.user = "zed";
    assert_int_equal(users_check(u, &c, canon), 0);
    c = (struct users_cred){
        .method = USERS_PASSWORD, .user = "carol", .secret = "", .secret_len = 0};
    assert_int_equal(users_check(u, &c, canon), 0); /* empty password: no password login */

    char digest[DG_MD5_HEX_LEN + 1];
    dg_md5_hex("<1.2@h>", 7, "secret", 6, digest);
    c = (struct users_cred){
        .method = USERS_APOP, .user = "bob", .apop_timestamp = "<1.2@h>", .apop_digest = digest};
    assert_int_equal(users_check(u, &c, canon), 1);
    c.apop_timestamp = "<1.3@h>";
    assert_int_equal(users_check(u, &c, canon), 0);

    c = (struct users_cred){
        .method = USERS_TOKEN, .user = "bob", .secret = "tok-bob", .secret_len = 7};
    assert_int_equal(users_check(u, &c, canon), 1);
    c.user = "alice"; /* has no token */
    assert_int_equal(users_check(u, &c, canon), 0);
    c = (struct users_cred){
        .method = USERS_TOKEN, .user = NULL, .secret = "tok-carol", .secret_len = 9};
    assert_int_equal(users_check(u, &c, canon), 1);
    assert_string_equal(canon, "carol");

    /* A changed file is read again. */
    sleep(1); /* a different mtime even on coarse clocks */
    write_file(path, "dave:new\n", 9);
    c = (struct users_cred){
        .method = USERS_PASSWORD, .user = "dave", .secret = "new", .secret_len = 3};
    assert_int_equal(users_check(u, &c, canon), 1);
    users_free(u);
    rm_tree(dir);

    assert_int_equal(users_name_ok("a/b", 3), 0);
    assert_int_equal(users_name_ok(".a", 2), 0);
    assert_int_equal(users_name_ok("", 0), 0);
    assert_int_equal(users_name_ok("a.b@c", 5), 1);
}

/* ---- locks ---- */

static void test_locks(void **state)
{
    (void)state;
    struct locks *l = locks_new(0.2);
    assert_int_equal(locks_acquire(l, "alice", "s1"), 1);
    assert_int_equal(locks_acquire(l, "alice", "s1"), 1); /* a retry of the same session */
    assert_int_equal(locks_acquire(l, "alice", "s2"), 0);
    assert_int_equal(locks_acquire(l, "bob", "s2"), 1);
    locks_release(l, "alice", "s2"); /* not the holder: no effect */
    assert_int_equal(locks_acquire(l, "alice", "s3"), 0);
    locks_release(l, "alice", "s1");
    assert_int_equal(locks_acquire(l, "alice", "s3"), 1);
    usleep(300 * 1000);
    assert_int_equal(locks_acquire(l, "alice", "s4"), 1); /* lapsed */
    locks_free(l);
}

/* ---- size cache ---- */

static void test_sizes_cache(void **state)
{
    (void)state;
    struct sizes *c = sizes_new(2);
    struct stat st = {.st_dev = 1, .st_ino = 2, .st_size = 10};
    uint64_t v = 0;
    assert_int_equal(sizes_get(c, "a", &st, &v), 0);
    sizes_put(c, "a", &st, 12);
    assert_int_equal(sizes_get(c, "a", &st, &v), 1);
    assert_int_equal(v, 12);
    st.st_size = 11; /* the file changed */
    assert_int_equal(sizes_get(c, "a", &st, &v), 0);
    sizes_put(c, "b", &st, 1);
    sizes_put(c, "c", &st, 1);
    assert_int_equal(sizes_count(c), 2); /* capped */
    sizes_forget(c, "c");
    sizes_forget(c, "b");
    sizes_forget(c, "a");
    assert_int_equal(sizes_count(c), 0);
    sizes_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whsig_vector), cmocka_unit_test(test_whsig_verify),
        cmocka_unit_test(test_base64),       cmocka_unit_test(test_sizer),
        cmocka_unit_test(test_uid),          cmocka_unit_test(test_store_list),
        cmocka_unit_test(test_users),        cmocka_unit_test(test_locks),
        cmocka_unit_test(test_sizes_cache),
    };
    note_set_quiet(1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
