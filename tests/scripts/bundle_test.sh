#!/usr/bin/env bash
# ctest "bundle": scripts/bundle.sh packs a build dir into a tarball whose
# programs run from anywhere with their own lib/ and no LD_LIBRARY_PATH.
#   tests/scripts/bundle_test.sh BUILD_DIR
# Exit 0 passed, 1 failed, 77 skipped (sanitizer build, no patchelf).
set -euo pipefail

build=${1:?usage: bundle_test.sh BUILD_DIR}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bundle="$repo/scripts/bundle.sh"

if grep -qs '^MOE_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "SKIP: $build is a sanitizer build; a bundle of it would need the sanitizer runtimes"
  exit 77
fi
if ! command -v patchelf >/dev/null 2>&1; then
  echo "SKIP: patchelf is not installed (scripts/setup.sh installs it)"
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moe-bundle-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
bare() { env -i PATH=/usr/bin:/bin HOME="$tmp" "$@"; }  # no LD_LIBRARY_PATH

# Bad arguments: one line on stderr, exit 2.
expect2() {
  local rc=0
  "$bundle" "$@" >"$tmp/out.txt" 2>"$tmp/err.txt" || rc=$?
  [ "$rc" = 2 ] || fail "bundle.sh $* exited $rc, expected 2"
  [ "$(wc -l <"$tmp/err.txt")" = 1 ] || fail "bundle.sh $* printed not one line on stderr: $(cat "$tmp/err.txt")"
}
expect2 --bogus
expect2 --build-dir
expect2 --build-dir "$tmp/no-such-build"
mkdir "$tmp/empty-build"
expect2 --build-dir "$tmp/empty-build"
"$bundle" --help | grep -q -- '--include-cuda' || fail "bundle.sh --help shows no usage"

# Bundle into the temp dir, never into the repository.
"$bundle" --build-dir "$build" --out "$tmp/out/" >"$tmp/bundle.log" 2>&1 ||
  { cat "$tmp/bundle.log"; fail "bundle.sh exited non-zero"; }
shopt -s nullglob
tarballs=("$tmp"/out/moe-lfb-*.tar.gz)
shopt -u nullglob
[ ${#tarballs[@]} = 1 ] || fail "expected one tarball in $tmp/out, found ${#tarballs[@]}"
tarball=${tarballs[0]}
tail -n 1 "$tmp/bundle.log"

tar -tzf "$tarball" >"$tmp/list.txt"
grep -Eq '^moe-lfb-[^/]+/bin/moe-train$' "$tmp/list.txt" || fail "no bin/moe-train in the tarball"
grep -Eq '^moe-lfb-[^/]+/configs/tiny\.yaml$' "$tmp/list.txt" || fail "no configs/tiny.yaml in the tarball"
grep -Eq '^moe-lfb-[^/]+/README\.txt$' "$tmp/list.txt" || fail "no README.txt in the tarball"
grep -Eq '^moe-lfb-[^/]+/lib/libyaml-cpp\.so\.' "$tmp/list.txt" || fail "no lib/libyaml-cpp.so.* in the tarball"
if grep -E '/lib/(libc\.so|libm\.so|libstdc\+\+|libmpi|libopen-|libcuda\.so)' "$tmp/list.txt"; then
  fail "a host library was bundled"
fi

mkdir "$tmp/x"
tar -xzf "$tarball" -C "$tmp/x"
root=$(echo "$tmp"/x/moe-lfb-*)
[ -x "$root/bin/moe-train" ] || fail "bin/moe-train is not executable after unpacking"
# shellcheck disable=SC2016  # a literal $ORIGIN
readelf -d "$root/bin/moe-train" | grep -F '(RUNPATH)' | grep -qF '[$ORIGIN/../lib]' ||
  fail "bin/moe-train RUNPATH is not \$ORIGIN/../lib: $(readelf -d "$root/bin/moe-train" | grep -E 'R(UN)?PATH' || echo none)"
yaml=$(bare ldd "$root/bin/moe-train" | grep 'libyaml-cpp' || true)
[[ "$yaml" == *"=> $root/bin/../lib/libyaml-cpp.so."* || "$yaml" == *"=> $root/lib/libyaml-cpp.so."* ]] ||
  fail "ldd resolves libyaml-cpp outside the bundle: ${yaml:-not listed}"
if bare ldd "$root/bin/moe-train" | grep -q 'not found'; then fail "bin/moe-train misses libraries"; fi

# The unpacked trainer trains, from another directory, with a bare environment.
(cd "$tmp" && bare "$root/bin/moe-train" --config "$root/configs/tiny.yaml" \
   --set train.steps=3 --set log.interval=1 --set log.out_dir="$tmp/run") >"$tmp/train.log" 2>&1 ||
  { tail -n 20 "$tmp/train.log"; fail "the bundled moe-train exited non-zero"; }
[ "$(wc -l <"$tmp/run/metrics.jsonl")" = 3 ] || fail "expected 3 lines in metrics.jsonl"
bare "$root/bin/moe-data" --version >/dev/null || fail "the bundled moe-data --version failed"
bare "$root/bin/moe-eval" --help >/dev/null || fail "the bundled moe-eval --help failed"
echo "PASS: bundle of $build ($(du -h "$tarball" | cut -f1)) unpacks and trains 3 steps"
