#!/usr/bin/env bash
# Build and run the C kernel's own tests and the plain C example, without Python,
# under AddressSanitizer and UndefinedBehaviorSanitizer, then the tests again under
# ThreadSanitizer (the threaded path: workers, the shared progress counter, the
# wait).  Every program runs under a timeout: a hang is a failure.
# Usage: bash csrc/tests/run.sh        (FASTCHECK_NO_TSAN=1 skips ThreadSanitizer)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
csrc="$(dirname "$here")"
out="${TMPDIR:-/tmp}/fastcheck-ctests"
mkdir -p "$out"
CC="${CC:-cc}"
common=(-std=c99 -Wall -Wextra -Wpedantic -Werror -g -O1 -fno-omit-frame-pointer
        -I"$csrc")
asan=("${common[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all)
tsan=("${common[@]}" -fsanitize=thread)
# alloc_test.c replaces the kernel's allocator to make each allocation fail in turn.
alloc=(-DFC_MALLOC=fc_test_malloc -DFC_CALLOC=fc_test_calloc)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
limit=120  # seconds per program

# build_and_run LABEL FLAGS-ARRAY-NAME SOURCE [EXTRA FLAGS...]
build_and_run() {
    local label="$1" flags_name="$2[@]" source="$3"
    shift 3
    local name
    name="$(basename "$source" .c)"
    "$CC" "${!flags_name}" "$@" "$source" "$csrc/kernel.c" -o "$out/$name-$label" -lm -lpthread
    echo "== $name ($label)"
    timeout "$limit" "$out/$name-$label"
}

for test in "$here"/test_*.c; do
    build_and_run asan+ubsan asan "$test"
done
build_and_run asan+ubsan asan "$here/alloc_test.c" "${alloc[@]}"

if [ "${FASTCHECK_NO_TSAN:-0}" != 1 ]; then
    for test in "$here"/test_*.c; do
        build_and_run tsan tsan "$test"
    done
    build_and_run tsan tsan "$here/alloc_test.c" "${alloc[@]}"
fi

# The examples are programs a user would write: they must build warning-free and
# exit 0 (each checks its own result).
for example in "$csrc"/examples/*.c; do
    name="$(basename "$example" .c)"
    "$CC" "${asan[@]}" "$example" "$csrc/kernel.c" -o "$out/example_$name" -lm -lpthread
    echo "== examples/$name (asan+ubsan)"
    timeout "$limit" "$out/example_$name"
    timeout "$limit" "$out/example_$name" 7 --print >/dev/null
done
