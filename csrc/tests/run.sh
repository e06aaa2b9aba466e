#!/usr/bin/env bash
# Build and run the C kernel's own tests and the plain C example, without Python,
# under AddressSanitizer and UndefinedBehaviorSanitizer.
# Usage: bash csrc/tests/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
csrc="$(dirname "$here")"
out="${TMPDIR:-/tmp}/fastcheck-ctests"
mkdir -p "$out"
CC="${CC:-cc}"
flags=(-std=c99 -Wall -Wextra -Wpedantic -Werror -g -O1 -fno-omit-frame-pointer
       -fsanitize=address,undefined -fno-sanitize-recover=all -I"$csrc")
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1

for test in "$here"/test_*.c; do
    name="$(basename "$test" .c)"
    "$CC" "${flags[@]}" "$test" "$csrc/kernel.c" -o "$out/$name" -lm -lpthread
    echo "== $name (asan+ubsan)"
    "$out/$name"
done

# The examples are programs a user would write: they must build warning-free and
# exit 0 (each checks its own result).
for example in "$csrc"/examples/*.c; do
    name="$(basename "$example" .c)"
    "$CC" "${flags[@]}" "$example" "$csrc/kernel.c" -o "$out/example_$name" -lm -lpthread
    echo "== examples/$name (asan+ubsan)"
    "$out/example_$name"
    "$out/example_$name" 7 --print >/dev/null
done
