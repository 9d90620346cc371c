/* schedule.c — optimizer defaults and learning-rate schedules.
 *
 * All schedules share a linear warmup from lr/warmup to lr over the first
 * warmup steps. After it, with progress p in [0, 1] over the remaining
 * steps and lr_min = lr * min_lr_ratio:
 *   cosine    lr_min + (lr - lr_min) (1 + cos(pi p)) / 2
 *   linear    lr - (lr - lr_min) p
 *   constant  lr
 *   wsd       lr until the last wsd_decay_frac of all steps, then linear to lr_min
 */
#include <math.h>
#include "../core/core.h"

void smj_optim_defaults(smj_optim_options *o) {
    o->lr = 3e-4f;
    o->min_lr_ratio = 0.1f;
    o->warmup_steps = 0;
    o->total_steps = 1000;
    o->schedule = SMJ_SCHED_COSINE;
    o->wsd_decay_frac = 0.2f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->weight_decay = 0.1f;
    o->grad_clip = 1.0f;
    o->skip_nonfinite = 1;
    o->max_bad_steps = 10;
}

float smj_lr_at(const smj_optim_options *o, int64_t step) {
    double lr = o->lr, lo = lr * o->min_lr_ratio;
    if (step < o->warmup_steps) return (float)(lr * (double)(step + 1) / o->warmup_steps);
    double span = (double)o->total_steps - o->warmup_steps;
    double p = span > 0 ? (double)(step - o->warmup_steps) / span : 1.0;
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    switch (o->schedule) {
    case SMJ_SCHED_CONSTANT: return (float)lr;
    case SMJ_SCHED_LINEAR: return (float)(lr - (lr - lo) * p);
    case SMJ_SCHED_WSD: {
        double start = (double)o->total_steps * (1.0 - o->wsd_decay_frac);
        if (step < start) return (float)lr;
        double q = ((double)step - start) / ((double)o->total_steps - start);
        q = q > 1 ? 1 : q;
        return (float)(lr - (lr - lo) * q);
    }
    case SMJ_SCHED_COSINE:
    default: return (float)(lo + (lr - lo) * 0.5 * (1.0 + cos(M_PI * p)));
    }
}
