#!/usr/bin/env bash
# Build and run the C kernel's own tests, without Python, under AddressSanitizer
# and UndefinedBehaviorSanitizer.  Usage: bash csrc/tests/run.sh [extra C files...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
csrc="$(dirname "$here")"
out="${TMPDIR:-/tmp}/fastcheck-ctests"
mkdir -p "$out"
CC="${CC:-cc}"
flags=(-std=c99 -Wall -Wextra -Wpedantic -Werror -g -O1 -fno-omit-frame-pointer
       -fsanitize=address,undefined -fno-sanitize-recover=all -I"$csrc")
for test in "$here"/test_*.c; do
    name="$(basename "$test" .c)"
    "$CC" "${flags[@]}" "$test" "$csrc/kernel.c" -o "$out/$name" -lm -lpthread
    echo "== $name (asan+ubsan)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/$name"
done
