# Prints the output of each failing test of a `go test -v` log, in the order
# the tests failed: go test -v marks whose output follows with "=== RUN",
# "=== CONT" and "=== NAME" lines, so parallel tests' lines are told apart.
# Lines from testenv's helpers (consul.go:115: ...) are included: they carry
# a failure's reason that the summary grep, which keeps *_test.go lines,
# drops. At most the last 40 lines per test.
FNR == NR {
  if (match($0, /^ *--- FAIL: [^ ]+/)) {
    name = substr($0, RSTART, RLENGTH); sub(/^ *--- FAIL: /, "", name)
    if (!(name in failed)) { failed[name] = 1; order[++n] = name }
  }
  next
}
/^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; next }
/^(--- |PASS$|FAIL$|ok |FAIL\t)/ { cur = ""; next }
cur in failed { lines[cur, ++count[cur]] = $0 }
END {
  for (i = 1; i <= n; i++) {
    name = order[i]
    print "--- output of " name " (" count[name]+0 " lines" (count[name] > 40 ? ", the last 40" : "") "):"
    for (j = (count[name] > 40 ? count[name] - 39 : 1); j <= count[name]; j++) print lines[name, j]
  }
}
