"""bench/timeline/idle.py TRACE.csv [STEPS] — where the GPU waited during the
last STEPS (default 4) training steps of a traced run (tracer.c's CSV; a step
ends with its AdamW kernel): the steps' span, busy and idle time, the idle
time by gap size, the longest gaps with the operations around them, and the
operations of a step by count."""
import collections
import csv
import sys

ev = sorted((int(r["start"]), int(r["end"]), r["kind"] + ":" + r["name"][:80]) for r in csv.DictReader(open(sys.argv[1])))
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
ends = [i for i, e in enumerate(ev) if "adamw" in e[2].lower()]
if len(ends) <= steps:
    sys.exit("idle.py: %d AdamW kernels in %s, need more than %d" % (len(ends), sys.argv[1], steps))
ev = ev[ends[-steps - 1] + 1: ends[-1] + 1]
gaps, end, prev, busy = [], ev[0][1], ev[0][2], ev[0][1] - ev[0][0]
for s, e, n in ev[1:]:
    if s > end:
        gaps.append((s - end, prev, n))
    busy += max(0, e - max(s, end))
    end, prev = max(end, e), n
span, idle = ev[-1][1] - ev[0][0], sum(g[0] for g in gaps)
print("%d steps, %d operations a step: span %.3f ms a step, busy %.3f, idle %.3f in %d gaps"
      % (steps, len(ev) // steps, span / 1e6 / steps, busy / 1e6 / steps, idle / 1e6 / steps, len(gaps) // steps))
BUCKETS = (("<1us", 1e3), ("<2us", 2e3), ("<5us", 5e3), ("<20us", 2e4), ("<100us", 1e5), (">=100us", 1e99))
by, nby = collections.Counter(), collections.Counter()
for g, _, _ in gaps:
    b = next(k for k, lim in BUCKETS if g < lim)
    by[b] += g
    nby[b] += 1
print("idle a step by gap size: " + ", ".join("%s %.3f ms (%.1f gaps)" % (k, by[k] / 1e6 / steps, nby[k] / steps) for k, _ in BUCKETS if nby[k]))
for g, a, b in sorted(gaps, reverse=True)[:20]:
    print("%8.1f us after %-50s before %s" % (g / 1e3, a[:50], b[:60]))
count, time = collections.Counter(), collections.Counter()
for s, e, n in ev:
    count[n[:60]] += 1
    time[n[:60]] += e - s
print("operations a step, by count:")
for n, c in count.most_common(30):
    print("  %5d  %8.3f ms  %s" % (c // steps, time[n] / 1e6 / steps, n))
