/*
 * sizes: a cache of computed message sizes, so that listing a mailbox again
 * does not read every message again.
 *
 * The key is the message's path under the root; an entry is valid only while
 * the file still has the inode, modification time and byte size it had when
 * the size was computed (any rewrite of the file changes one of them). The
 * table holds at most a fixed number of entries and drops old ones to make
 * room. Thread-safe (one mutex; every operation is a hash lookup).
 */
#ifndef MAILDIR_SIZES_H
#define MAILDIR_SIZES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct sizes;

/* A cache of at most `max_entries` sizes. NULL when out of memory. */
struct sizes *sizes_new(size_t max_entries);
void sizes_free(struct sizes *c);

/* 1 and the size in *size when `key` is cached for the file `st` describes; 0 otherwise. */
int sizes_get(struct sizes *c, const char *key, const struct stat *st, uint64_t *size);

/* Remembers `size` for `key` and the file `st` describes (best effort: a
 * failed allocation just leaves it uncached). */
void sizes_put(struct sizes *c, const char *key, const struct stat *st, uint64_t size);

/* Forgets `key` (its file was deleted). */
void sizes_forget(struct sizes *c, const char *key);

/* Entries held now (for tests). */
size_t sizes_count(struct sizes *c);

#endif
