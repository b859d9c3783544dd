#!/usr/bin/env bash
# Proves that the tensor-core attention kernels (kernels/attention_tc.cu) run
# on tensor cores, without a GPU (ctest "attention_tc_ptx", label cpu, CUDA
# builds) and, where cuobjdump exists, in the built binary too. (What those
# instructions compute is checked on the emulated device, which runs the
# same asm from the PTX ISA's definitions: emu/tests/test_emu_attention_tc.cpp.)
#   tests/scripts/attention_tc_ptx_test.sh [--ptx NVCC SOURCE_DIR [--ccbin CXX]] [--sass BINARY]
#     --ptx    compile kernels/attention_tc.cu to PTX for sm_80 and check that
#              every instance (hd 64 and 128) of the forward, dq and dkdv
#              kernels contains mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
#              (and ldmatrix and cp.async)
#     --sass   when cuobjdump is on PATH: check that cuobjdump -sass BINARY
#              (a program linking the kernels, e.g. test_gpu_attention_tc) has
#              HMMA instructions in each of those kernels for every GPU
#              architecture it holds. Without cuobjdump this part is skipped
#              (exit 77 when it is the only part asked for).
# Exit 0 when every requested check passed, 1 on a failure, 2 on bad arguments.
set -euo pipefail

nvcc="" src="" ccbin="" binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ptx)
      [ $# -ge 3 ] || { echo "attention_tc_ptx_test.sh: --ptx needs NVCC and SOURCE_DIR" >&2; exit 2; }
      nvcc=$2 src=$3; shift 3 ;;
    --ccbin)
      [ $# -ge 2 ] || { echo "attention_tc_ptx_test.sh: --ccbin needs a compiler" >&2; exit 2; }
      ccbin=$2; shift 2 ;;
    --sass)
      [ $# -ge 2 ] || { echo "attention_tc_ptx_test.sh: --sass needs a binary" >&2; exit 2; }
      binary=$2; shift 2 ;;
    *) echo "attention_tc_ptx_test.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -z "$nvcc" ] && [ -z "$binary" ]; then
  echo "attention_tc_ptx_test.sh: nothing to check (--ptx and/or --sass)" >&2; exit 2
fi

mma='mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32'
kernels='attn_tc_fwd_kernel attn_tc_dq_kernel attn_tc_dkdv_kernel'
failed=0

if [ -n "$nvcc" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  args=(-std=c++20 -O3 -I"$src/kernels" -I"$src/src" -arch=compute_80 -ptx
        "$src/kernels/attention_tc.cu" -o "$tmp/attention_tc.ptx")
  if [ -n "$ccbin" ]; then args=(-ccbin "$ccbin" "${args[@]}"); fi
  "$nvcc" "${args[@]}"
  # One line per kernel entry: name, mma, ldmatrix and cp.async instruction counts.
  awk -v mma="$mma" '
    /^\.(visible |weak )?\.entry / { name = $NF; sub(/\(.*/, "", name); n_mma = n_ld = n_cp = 0; inside = 1; next }
    inside && index($0, mma) { n_mma++ }
    inside && /ldmatrix\.sync\.aligned/ { n_ld++ }
    inside && /cp\.async\.cg\.shared\.global/ { n_cp++ }
    inside && /^}/ { print name, n_mma, n_ld, n_cp; inside = 0 }
  ' "$tmp/attention_tc.ptx" > "$tmp/entries.txt"
  for k in $kernels; do
    for hd in 64 128; do
      line=$(grep -E "${k}ILi${hd}E" "$tmp/entries.txt" || true)
      if [ -z "$line" ]; then
        echo "FAIL ptx: no entry for ${k}<${hd}>"; failed=1; continue
      fi
      read -r _ n_mma n_ld n_cp <<< "$line"
      if [ "$n_mma" -gt 0 ] && [ "$n_ld" -gt 0 ] && [ "$n_cp" -gt 0 ]; then
        echo "ok   ptx sm_80 ${k}<${hd}>: $n_mma x $mma, $n_ld ldmatrix, $n_cp cp.async"
      else
        echo "FAIL ptx sm_80 ${k}<${hd}>: $n_mma mma, $n_ld ldmatrix, $n_cp cp.async"; failed=1
      fi
    done
  done
fi

if [ -n "$binary" ]; then
  if ! command -v cuobjdump >/dev/null 2>&1; then
    echo "skipped sass: cuobjdump not on PATH"
    if [ -z "$nvcc" ]; then exit 77; fi
  elif [ ! -f "$binary" ]; then
    echo "FAIL sass: no such binary $binary"; failed=1
  else
    sass=$(mktemp)
    cuobjdump -sass "$binary" > "$sass"
    # arch, function and HMMA count per function.
    counts=$(awk '
      /code for sm_[0-9]+/ {
        if (fn != "") print arch, fn, n
        fn = ""; match($0, /sm_[0-9]+/); arch = substr($0, RSTART, RLENGTH); next
      }
      /Function : / { if (fn != "") print arch, fn, n; fn = $NF; n = 0; next }
      /HMMA/ { n++ }
      END { if (fn != "") print arch, fn, n }
    ' "$sass")
    rm -f "$sass"
    archs=$(echo "$counts" | awk '{print $1}' | sort -u)
    if [ -z "$archs" ]; then echo "FAIL sass: cuobjdump found no device code in $binary"; failed=1; fi
    for arch in $archs; do
      for k in $kernels; do
        for hd in 64 128; do
          n=$(echo "$counts" | awk -v a="$arch" -v k="${k}ILi${hd}E" '$1 == a && index($2, k) { s += $3; f = 1 } END { print f ? s : -1 }')
          if [ "$n" -gt 0 ]; then
            echo "ok   sass $arch ${k}<${hd}>: $n HMMA"
          else
            echo "FAIL sass $arch ${k}<${hd}>: $( [ "$n" -lt 0 ] && echo 'kernel not found' || echo 'no HMMA')"
            failed=1
          fi
        done
      done
    done
  fi
fi

if [ "$failed" = 0 ]; then echo "attention_tc: tensor-core instructions present"; fi
exit "$failed"
