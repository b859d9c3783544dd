#!/usr/bin/env bash
# A real full disk (docs/reliability.md): moe-train, moe-data prepare and
# moe-export writing into a tmpfs of a few MB, in a private mount namespace
# (unshare -m). Needs the right to mount (root, or a user namespace): skips
# with code 77 where the machine does not allow it.
#   tests/scripts/full_disk_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: full_disk_test.sh BUILD_DIR}" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)

if [ "${MOE_FULL_DISK_INSIDE:-}" != 1 ]; then
  probe=$(mktemp -d)
  if ! unshare -m sh -c "mount -t tmpfs -o size=1m tmpfs '$probe'" 2>/dev/null; then
    rmdir "$probe"
    echo "full_disk_test: cannot mount a tmpfs here (not root, no user namespaces): skipped"
    exit 77
  fi
  rmdir "$probe"
  MOE_FULL_DISK_INSIDE=1 exec unshare -m "$0" "$@"
fi

tmp=$(mktemp -d)
trap 'umount "$tmp"/disk* 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "full_disk_test: FAIL: $*" >&2; exit 1; }
disk() { mkdir -p "$tmp/$1"; mount -t tmpfs -o "size=$2" tmpfs "$tmp/$1"; echo "$tmp/$1"; }
nospace="No space left on device"
cd "$tmp"

# 1. moe-train: a tiny run's checkpoint is 3.2 MB. On 5 MB the first one
#    (step 2) fits; the next (step 4) does not: logged, the run goes on;
#    the last (step 6) does not either: the run ends with exit code 1,
#    step 2 still latest and whole, every metrics line kept.
d=$(disk disk_train 5m)
set +e
"$build/moe-train" --config "$src/configs/tiny.yaml" --set train.steps=6 --set train.threads=1 \
  --set train.final_eval=false --set checkpoint.interval=2 --set checkpoint.keep_last=1 \
  --set log.out_dir="$d/run" --set checkpoint.dir="$d/ck" > train.log 2>&1
code=$?
set -e
[ $code -eq 1 ] || { cat train.log; fail "moe-train on a full disk exited $code, not 1"; }
grep -q "checkpoint of step 4 not saved: .*$nospace.*; training goes on" train.log ||
  { cat train.log; fail "the failed save of step 4 was not logged"; }
grep -q "moe-train: error: checkpoint of step 6 not saved: .*$nospace; the latest checkpoint is still $d/ck/step_00000002" train.log ||
  { cat train.log; fail "no one-line error for the failed last save"; }
[ "$(grep -c 'moe-train: error:' train.log)" -eq 1 ] || fail "more than one error line"
[ "$(ls -A "$d/ck" | tr '\n' ' ')" = ".moe.lock latest step_00000002 " ] ||  # the run's lock stays
  fail "checkpoint.dir holds $(ls -A "$d/ck" | tr '\n' ' ')"
[ "$(cat "$d/ck/latest")" = step_00000002 ] || fail "latest is $(cat "$d/ck/latest")"
[ "$(wc -l < "$d/run/metrics.jsonl")" -eq 6 ] || fail "metrics.jsonl lost lines"
"$build/moe-train" --config "$src/configs/tiny.yaml" --set train.steps=3 --set train.threads=1 \
  --set train.final_eval=false --set log.out_dir="$tmp/run2" --set checkpoint.dir="$tmp/ck2" \
  --resume "$d/ck/step_00000002" > resume.log 2>&1 || { cat resume.log; fail "resume from step 2 failed"; }
grep -q "step 3/3" resume.log || { cat resume.log; fail "the resumed run did not train step 3"; }
echo "full_disk_test: moe-train: a full disk ends the run with one line; step 2 latest; resume ok"

# 2. moe-data prepare into 64 KB: nothing of its output is left.
mkdir -p in
for i in $(seq 1 2000); do printf 'paragraph %d of a corpus that fills the disk\n\n' "$i"; done > in/a.txt
"$build/moe-data" tokenizer-train --input in --vocab-size 300 --character-coverage 1 \
  --output tok > tok.log 2>&1 || { cat tok.log; fail "tokenizer-train"; }
d=$(disk disk_data 64k)
set +e
"$build/moe-data" prepare --tokenizer tok.model --input in --output "$d/shards" \
  --shard-tokens 4000 > prepare.log 2>&1
code=$?
set -e
[ $code -eq 1 ] || { cat prepare.log; fail "moe-data prepare on a full disk exited $code, not 1"; }
grep -q "moe-data: error: .*$nospace" prepare.log || { cat prepare.log; fail "no error line"; }
[ -z "$(ls -A "$d/shards" 2>/dev/null)" ] || fail "prepare left $(ls -A "$d/shards")"
echo "full_disk_test: moe-data prepare: one line, nothing left"

# 3. moe-export of the step-2 checkpoint into 256 KB: no output directory.
"$build/moe-train" --config "$src/configs/tiny.yaml" --set train.steps=1 --set train.threads=1 \
  --set train.final_eval=false --set log.out_dir="$tmp/run3" --set checkpoint.dir="$tmp/ck3" \
  > train3.log 2>&1 || { cat train3.log; fail "moe-train for the export"; }
d=$(disk disk_export 256k)
set +e
"$build/moe-export" --checkpoint "$tmp/ck3" --output "$d/hf" > export.log 2>&1
code=$?
set -e
[ $code -eq 1 ] || { cat export.log; fail "moe-export on a full disk exited $code, not 1"; }
grep -q "moe-export: error: .*$nospace" export.log || { cat export.log; fail "no error line"; }
[ -z "$(ls -A "$d")" ] || fail "moe-export left $(ls -A "$d")"
echo "full_disk_test: moe-export: one line, nothing left"
echo "full_disk_test: ok"
