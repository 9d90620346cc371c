/* fixture.h — reader for the SMJFIX01 reference fixtures (tests/fixtures/NAME.bin).
 *
 * The files are written by tools/make_fixtures.py; docs/FIXTURES.md describes
 * the format. A fixture is a list of named n-dimensional entries (f32, i32,
 * f64, u8 strings and "gen" tensors that the reader expands to exact f32
 * values). fixture_load checks every byte against the file's bounds and
 * returns NULL with a message on stderr for anything malformed; the accessors
 * return NULL / 0 with a message on stderr for a missing name or a wrong type.
 */
#ifndef SMJ_TEST_FIXTURE_H
#define SMJ_TEST_FIXTURE_H
#include <stdint.h>

enum { FIXTURE_F32 = 0, FIXTURE_I32 = 1, FIXTURE_F64 = 2, FIXTURE_U8 = 3, FIXTURE_GEN = 4 };
#define FIXTURE_MAX_NDIM 8

typedef struct fixture fixture;

fixture *fixture_load(const char *path);
void fixture_free(fixture *f);

/* Entries in file order. */
int fixture_count(const fixture *f);
const char *fixture_name(const fixture *f, int i);
int fixture_dtype(const fixture *f, int i); /* FIXTURE_*; GEN entries read as f32 */
/* 1 when the entry was read through an accessor since loading. */
int fixture_used(const fixture *f, int i);
int fixture_find(const fixture *f, const char *name); /* index or -1 (silent) */

/* ndim of the entry (dims[FIXTURE_MAX_NDIM] filled when not NULL), -1 if absent. */
int fixture_shape(const fixture *f, const char *name, int64_t *dims);

/* Data of an f32 (or gen) / i32 entry; *numel (may be NULL) gets the element count. */
const float *fixture_f32(fixture *f, const char *name, int64_t *numel);
const int32_t *fixture_i32(fixture *f, const char *name, int64_t *numel);
const double *fixture_f64(fixture *f, const char *name, int64_t *numel);
/* A u8 entry as a NUL-terminated string. */
const char *fixture_str(fixture *f, const char *name);

/* One-element entries; 0 with a message on stderr when absent or not one element. */
int fixture_i32_scalar(fixture *f, const char *name);
float fixture_f32_scalar(fixture *f, const char *name); /* f32, gen, f64 or i32 */

#endif
