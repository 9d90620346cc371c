#!/bin/sh
# Regenerates data/devils_dictionary.txt, the corpus smedjan ships, from
# Debian's dict-devil package (Ambrose Bierce, The Devil's Dictionary, 1911;
# public domain). Drops the dictfmt header lines the package adds and its
# trailing index line; the text itself is unchanged.
set -eu
src=/usr/share/dictd/devil.dict.dz
[ -f "$src" ] || { echo "install dict-devil first: apt-get install dict-devil" >&2; exit 1; }
out=data/devils_dictionary.txt
zcat "$src" | awk 'f{print} /^The original data was distributed/{s=1} s && /^$/ && !f{f=1}' \
  | sed '$d' > "$out.tmp"
mv "$out.tmp" "$out"
wc -c "$out"
