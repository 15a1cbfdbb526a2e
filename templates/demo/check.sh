#!/bin/sh
# The demo's check: each file, once it exists, must hold exactly its expected line.
fail=0
check() {
    if [ -e "$1" ] && [ "$(cat "$1")" != "$2" ]; then
        echo "$1: expected \"$2\", found \"$(cat "$1")\""
        fail=1
    fi
}
check greeting.txt "Hello, world!"
check farewell.txt "Goodbye, world!"
if [ -e summary.md ] && ! grep -q "greeting.txt" summary.md; then
    echo "summary.md does not mention greeting.txt"
    fail=1
fi
[ "$fail" = 0 ] && echo "all checks passed"
exit $fail
