#!/bin/sh
# Runs each test program given as an argument, prints one line per program and
# the closing "N passed, N failed" line; exits non-zero if any failed.
# Fuzz targets (build*/fuzz/*) run over tests/fuzz/corpus/<name>/ plus
# SMJ_FUZZ_ITERS random mutations.
pass=0; fail=0; failed=""
for t in "$@"; do
  name=$(basename "$t")
  log="${TMPDIR:-/tmp}/smj-test-$name.$$.log"
  case "$t" in
    */fuzz/*) "$t" "tests/fuzz/corpus/${name#fuzz_}" "${SMJ_FUZZ_ITERS:-3000}" >"$log" 2>&1 ;;
    *) "$t" >"$log" 2>&1 ;;
  esac
  rc=$?
  if [ $rc -eq 0 ]; then
    pass=$((pass+1)); echo "PASS $name ($(tail -n 1 "$log"))"
  else
    fail=$((fail+1)); failed="$failed $name"; echo "FAIL $name (exit $rc)"; sed 's/^/    /' "$log" | tail -n 40
  fi
  rm -f "$log"
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] || { echo "failed:$failed"; exit 1; }
