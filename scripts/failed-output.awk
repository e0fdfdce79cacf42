# Prints the output of each failing test of a `go test -v` log, in the order
# the tests failed (run it with the log named twice: awk -f THIS LOG LOG).
# go test -v marks whose output follows with "=== RUN", "=== CONT",
# "=== NAME" (and other "=== WORD") lines, so parallel tests' lines are told
# apart; tests are keyed by package too (the same name can fail in two).
# Lines from testenv's helpers (consul.go:115: ...) are included: they carry
# a failure's reason that the summary grep, which keeps *_test.go lines,
# drops. A test that ran out of time has no "--- FAIL" line: the names the
# timeout panic lists count as failed. freeport's own log lines are left
# out. At most the last 40 lines per test.
FNR == NR {
  if (match($0, /^ *--- FAIL: [^ ]+/)) {
    fail(substr($0, RSTART, RLENGTH), pkg)
  } else if ($0 ~ /^panic: test timed out/) {
    timedout = 1
  } else if (timedout && match($0, /^\t+[^ \t]+ \(/)) {
    fail(substr($0, RSTART, RLENGTH - 2), pkg)
  } else if ($0 !~ /^\t/) {
    timedout = 0
  }
  if ($0 ~ /^(ok |FAIL\t)/) pkg++
  next
}
/^=== [A-Z]+ / { cur = pkg2 SUBSEP $3; next }
/^(ok |FAIL\t)/ { pkg2++; cur = ""; next }
/^(--- |PASS$|FAIL$)/ { cur = ""; next }
/\] freeport: / { next }
cur in failed { lines[cur, ++count[cur]] = $0 }
END {
  for (i = 1; i <= n; i++) {
    key = order[i]; split(key, part, SUBSEP)
    print "--- output of " part[2] " (" count[key]+0 " lines" (count[key] > 40 ? ", the last 40" : "") "):"
    for (j = (count[key] > 40 ? count[key] - 39 : 1); j <= count[key]; j++) print lines[key, j]
  }
}
function fail(name, p) {
  sub(/^[ \t]*(--- FAIL: )?/, "", name)
  if (!((p, name) in failed)) { failed[p, name] = 1; order[++n] = p SUBSEP name }
}
