/* checkpoint.h — model <-> container, shared by checkpoints and training
 * states (the trainer adds its tensors and metadata). */
#ifndef SMJ_CHECKPOINT_H
#define SMJ_CHECKPOINT_H
#include "container.h"
struct smj_model;
/* Writes the config + every parameter, then the extra entries and metadata. */
smj_status smj_model_write_container(struct smj_model *m, const char *path, uint32_t kind,
                                     const char *extra_meta, const smj_ct_entry *extra, int n_extra);
/* Copies every parameter of m (by name, shapes checked) from an open container. */
smj_status smj_model_read_weights(struct smj_model *m, const char *path, const smj_container *c);
#endif
