#!/usr/bin/env bash
# Packs the built programs into a relocatable tarball that runs on a machine
# without our Debian -dev packages (a GPU machine with CUDA, NCCL and MPI).
#   scripts/bundle.sh [--build-dir DIR] [--out FILE.tar.gz] [--with-tests] [--include-cuda]
# Layout: moe-lfb-<version>/{bin,lib,configs,README.txt}. bin/ holds the
# programs with RUNPATH $ORIGIN/../lib, lib/ the non-system shared libraries
# they need (found with ldd) with RUNPATH $ORIGIN. The C/C++ runtime, the
# NVIDIA driver, MPI and (unless --include-cuda) the CUDA libraries and NCCL
# are left to the host. The tarball is unpacked and run once before the
# script reports success.
# Exit codes: 0 done; 2 bad argument, missing build or tool; 1 self-check failed.
set -euo pipefail

prog=bundle
# shellcheck disable=SC2016  # literal $ORIGIN, expanded by the dynamic loader
bin_rpath='$ORIGIN/../lib' lib_rpath='$ORIGIN'
usage() {
  cat <<'EOF'
usage: scripts/bundle.sh [--build-dir DIR] [--out FILE.tar.gz] [--with-tests] [--include-cuda]
  --build-dir DIR   build directory holding moe-train, moe-eval, moe-data (default: build)
  --out FILE        tarball to write (default: dist/moe-lfb-<version>-<arch>.tar.gz);
                    an existing directory or a path ending in / gets the default name inside
  --with-tests      also bundle the test executables (test_*, mpi_fail_probe)
  --include-cuda    also bundle the CUDA runtime, cuBLAS and NCCL (hundreds of MB);
                    by default the host provides them
  --help            this text
Bundled: bin/ (moe-train, moe-eval, moe-data, moe-bench and moe-export when built), lib/ (the
shared libraries the host lacks, RUNPATH $ORIGIN), configs/, README.txt.
Left to the host: glibc, libstdc++, libgcc_s, the NVIDIA driver, MPI (so the
programs match the host's mpirun) and, without --include-cuda, CUDA and NCCL.
EOF
}
die() { echo "$prog: $1" >&2; exit "${2:-2}"; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=""
out=""
with_tests=0
include_cuda=0
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) usage; exit 0 ;;
    --build-dir|--out)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
      if [ "$1" = --build-dir ]; then build_dir=$2; else out=$2; fi
      shift 2 ;;
    --build-dir=*) build_dir=${1#*=}; [ -n "$build_dir" ] || die "--build-dir needs a value"; shift ;;
    --out=*) out=${1#*=}; [ -n "$out" ] || die "--out needs a value"; shift ;;
    --with-tests) with_tests=1; shift ;;
    --include-cuda) include_cuda=1; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# Relative paths the user gives are relative to the current directory; the
# defaults to the repository root.
[ -n "$build_dir" ] || build_dir="$repo/build"
[ -d "$build_dir" ] || die "build directory '$build_dir' does not exist (build first: scripts/build.sh)"
build_dir=$(cd "$build_dir" && pwd)

for tool in patchelf readelf ldd tar gzip objdump; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is not installed (scripts/setup.sh installs it; patchelf: apt-get install patchelf)"
done

is_elf() { [ -f "$1" ] && [ -x "$1" ] && [ "$(head -c 4 "$1" | tr -d '\0')" = $'\x7fELF' ]; }
# A program in the build dir: at the top, else one level down (data_tools/, apps/ ...).
find_program() {
  local name=$1 f
  if is_elf "$build_dir/$name"; then echo "$build_dir/$name"; return 0; fi
  for f in "$build_dir"/*/"$name"; do
    case "$f" in */CMakeFiles/*) continue ;; esac
    if is_elf "$f"; then echo "$f"; return 0; fi
  done
  return 1
}

bins=()
missing=()
for name in moe-train moe-eval moe-data; do
  if f=$(find_program "$name"); then bins+=("$f"); else missing+=("$name"); fi
done
[ ${#missing[@]} -eq 0 ] ||
  die "missing in $build_dir: ${missing[*]} (build them: cmake --build $build_dir --target moe-train moe-eval moe-data)"
for optional in moe-bench moe-export; do
  if f=$(find_program "$optional"); then bins+=("$f"); fi
done
if [ "$with_tests" = 1 ]; then
  ntests=0
  for f in "$build_dir"/tests/test_* "$build_dir"/tests/mpi_fail_probe; do
    if is_elf "$f"; then bins+=("$f"); ntests=$((ntests + 1)); fi
  done
  [ "$ntests" -gt 0 ] || die "--with-tests: no test executables in $build_dir/tests (configure with MOE_BUILD_TESTS=ON and build them)"
fi

version=$("$build_dir/moe-train" --version 2>/dev/null | awk 'NR == 1 {print $NF}') || version=""
if ! [[ "$version" =~ ^[0-9][0-9A-Za-z.+-]*$ ]]; then
  version=$(sed -n 's/^project([^)]*VERSION \([0-9][0-9.]*\).*/\1/p' "$repo/CMakeLists.txt" | head -n 1)
fi
[ -n "$version" ] || die "cannot tell the version (moe-train --version or CMakeLists.txt project VERSION)"
arch=$(uname -m)
top="moe-lfb-$version"
default_name="$top-$arch.tar.gz"
if [ -z "$out" ]; then
  out="$repo/dist/$default_name"
elif [ -d "$out" ] || [[ "$out" == */ ]]; then
  out="${out%/}/$default_name"
fi
mkdir -p "$(dirname "$out")" || die "cannot create the directory of '$out'"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

if grep -qs '^MOE_SANITIZE:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  echo "$prog: warning: $build_dir is a sanitizer build (MOE_SANITIZE=ON); its runtimes get bundled, not for production" >&2
fi

# ---- which libraries: walk DT_NEEDED from every program, stopping at host libraries ----
# host_kind NAME: prints the reason a library is left to the host, nothing when it is bundled.
host_kind() {
  case "$1" in
    linux-vdso.so*|linux-gate.so*|ld-linux*|ld64.so*|libc.so*|libm.so*|libmvec.so*|libdl.so*|\
    libpthread.so*|librt.so*|libresolv.so*|libutil.so*|libanl.so*|libnsl.so*|\
    libgcc_s.so*|libstdc++.so*)
      echo system ;;
    libcuda.so*|libnvidia*)
      echo driver ;;
    libmpi*|libopen-*|liboshmem*|libmca_common*|libpmix*|libpmi*|libprrte*|libhwloc*|libevent*|\
    libfabric*|libucx*|libucp*|libucs*|libuct*|libucm*|libmunge*|libpsm*|libibverbs*|librdmacm*|libnl-*)
      echo mpi ;;
    libcudart*|libcublas*|libcufft*|libcurand*|libcusparse*|libcusolver*|libnccl*|\
    libnvrtc*|libnvJitLink*|libnvToolsExt*|libnvtx*|libcupti*|libcudnn*|libnvblas*|libnpp*)
      if [ "$include_cuda" = 1 ]; then echo ""; else echo cuda; fi ;;
    *) echo "" ;;
  esac
}
needed_of() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }
soname_of() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p'; }

declare -A bundle_src=()   # needed name -> library path on this machine
declare -A host_lib=()     # needed name -> "kind path"
unresolved=()
walk() {  # walk PROGRAM: resolves with ldd of PROGRAM, the loader's view for that process
  local bin=$1 line name path kind
  local -A where=()
  while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+(.*)[[:space:]]+\(0x ]]; then
      where[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    elif [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+not\ found ]]; then
      where[${BASH_REMATCH[1]}]="not found"
    elif [[ "$line" =~ ^[[:space:]]*(/[^[:space:]]+)[[:space:]]+\(0x ]]; then
      where[$(basename "${BASH_REMATCH[1]}")]=${BASH_REMATCH[1]}  # the dynamic loader
    fi
  done < <(ldd "$bin" 2>/dev/null || true)
  local -a queue
  mapfile -t queue < <(needed_of "$bin")
  local -A seen=()
  while [ ${#queue[@]} -gt 0 ]; do
    name=${queue[0]}; queue=("${queue[@]:1}")
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    path=${where[$name]:-not found}
    kind=$(host_kind "$name")
    if [ -n "$kind" ]; then
      host_lib[$name]="$kind $path"
      continue
    fi
    if [ "$path" = "not found" ] || [ ! -e "$path" ]; then
      unresolved+=("$name (needed by $(basename "$bin"))")
      continue
    fi
    [ -n "${bundle_src[$name]:-}" ] || bundle_src[$name]=$path
    mapfile -t -O "${#queue[@]}" queue < <(needed_of "$path")
  done
}
for b in "${bins[@]}"; do walk "$b"; done
if [ ${#unresolved[@]} -gt 0 ]; then
  die "ldd cannot find ${unresolved[*]} on this machine; fix the build environment first" 1
fi

# ---- stage ----
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moe-bundle.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
stage="$tmp/stage/$top"
mkdir -p "$stage/bin" "$stage/lib"

for b in "${bins[@]}"; do
  dst="$stage/bin/$(basename "$b")"
  cp "$b" "$dst"
  chmod 755 "$dst"
  patchelf --remove-rpath "$dst"
  patchelf --set-rpath "$bin_rpath" "$dst"
done

bundled_report=()
for name in $(printf '%s\n' "${!bundle_src[@]}" | sort); do
  src=${bundle_src[$name]}
  real=$(readlink -f "$src")
  so=$(soname_of "$real"); [ -n "$so" ] || so=$name
  if [ ! -e "$stage/lib/$so" ]; then
    cp "$real" "$stage/lib/$so"
    chmod 755 "$stage/lib/$so"
    patchelf --remove-rpath "$stage/lib/$so"
    patchelf --set-rpath "$lib_rpath" "$stage/lib/$so"
  fi
  if [ "$so" != "$name" ] && [ ! -e "$stage/lib/$name" ]; then
    ln -s "$so" "$stage/lib/$name"
  fi
  bundled_report+=("$(printf '%-28s %6s  from %s' "$so" "$(du -h "$stage/lib/$so" | cut -f1)" "$real")")
done

cp -r "$repo/configs" "$stage/configs"

# The oldest C/C++ runtime the host may have: the newest symbol versions imported.
max_version() {  # max_version PREFIX FILES...: newest PREFIX_x.y.z that the files import
  local prefix=$1; shift
  objdump -T "$@" 2>/dev/null | grep -F '*UND*' | grep -o "${prefix}_[0-9][0-9.]*" | sort -u -V | tail -n 1
}
shopt -s nullglob
elfs=("$stage"/bin/* "$stage"/lib/*)
shopt -u nullglob
need_glibc=$(max_version GLIBC "${elfs[@]}")
need_glibcxx=$(max_version GLIBCXX "${elfs[@]}")
need_cxxabi=$(max_version CXXABI "${elfs[@]}")

host_report=()
host_names=()
for name in $(printf '%s\n' "${!host_lib[@]}" | sort); do
  kind=${host_lib[$name]%% *}
  path=${host_lib[$name]#* }
  case "$name" in linux-vdso*|linux-gate*) continue ;; esac
  host_names+=("$name")
  host_report+=("$(printf '%-28s %-7s %s' "$name" "$kind" "$path")")
done

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
bin_list=""
for f in "$stage"/bin/*; do bin_list+="$(basename "$f") "; done
names_of_kind() {  # the host libraries of one kind, space-separated
  local n
  for n in "${host_names[@]}"; do
    if [ "${host_lib[$n]%% *}" = "$1" ]; then printf '%s ' "$n"; fi
  done
}
mpi_names=$(names_of_kind mpi)
cuda_names=$(names_of_kind cuda)
if [ -n "$cuda_names" ]; then
  cuda_line="the CUDA libraries these programs link: ${cuda_names% }, found by the loader (ldconfig or LD_LIBRARY_PATH)"
elif [ "$include_cuda" = 1 ]; then
  cuda_line="no CUDA library: those the programs link are in lib/"
else
  cuda_line="no CUDA library (these programs link none)"
fi
cat > "$stage/README.txt" <<EOF
moe-lfb $version ($arch, commit $commit), relocatable build
=============================================================

Unpack anywhere and run from the unpacked directory:

  bin/moe-train --config configs/tiny.yaml            # tiny CPU run, about 20 s on 2 cores
  bin/moe-train --config configs/tiny.yaml --set train.steps=100 --set log.out_dir=runs/t
  bin/moe-eval --checkpoint runs/demo/checkpoints --data DATA_DIR
  bin/moe-data --help                                  # tokenizer-train, prepare

Several ranks (the host's Open MPI; give mpirun the program's full path):

  mpirun -np 4 \$PWD/bin/moe-train --config configs/tiny.yaml --set parallel.ep_size=2
  mpirun -np 8 -x OMP_NUM_THREADS=2 \$PWD/bin/moe-train --config configs/paper/1b_loss_free.yaml

On several nodes, unpack the bundle at the same path on each.

Programs: $bin_list
They find the libraries in lib/ through RUNPATH \$ORIGIN/../lib: no
LD_LIBRARY_PATH is needed (a directory in LD_LIBRARY_PATH holding a library of
the same name takes precedence). Some test programs (test_cli*, test_config,
test_data_tools, test_mpi_comm) look for the build machine's source and build
directories; the others, test_gpu_* among them, run anywhere.

The host must provide:
  - glibc >= ${need_glibc#GLIBC_}, libstdc++ with ${need_glibcxx:-GLIBCXX_3.4} and ${need_cxxabi:-CXXABI_1.3}, libgcc_s
  - Open MPI with ${mpi_names% } (Open MPI 4.x), and its mpirun
  - the NVIDIA driver for GPUs, and $cuda_line
Libraries left to the host (name, kind, path on the build machine):
$(printf '  %s\n' "${host_report[@]}")
Bundled in lib/:
$(printf '  %s\n' "${bundled_report[@]}")
EOF

tar --sort=name --owner=0 --group=0 --numeric-owner -C "$tmp/stage" -czf "$out.partial" "$top"
mv -f "$out.partial" "$out"

# ---- self-check: unpack and run with a bare environment ----
fail() { rm -f "$out"; die "self-check failed: $1 (tarball removed)" 1; }
check="$tmp/check"
mkdir -p "$check"
tar -xzf "$out" -C "$check" || fail "cannot unpack $out"
root="$check/$top"
for f in "$root"/bin/*; do
  rp=$(readelf -d "$f" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p')
  [ "$rp" = "$bin_rpath" ] || fail "bin/$(basename "$f") has RUNPATH '$rp', not \$ORIGIN/../lib"
  ! readelf -d "$f" | grep -q '(RPATH)' || fail "bin/$(basename "$f") still has an RPATH"
done
for f in "$root"/lib/*; do
  [ -L "$f" ] && continue
  rp=$(readelf -d "$f" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p')
  [ "$rp" = "$lib_rpath" ] || fail "lib/$(basename "$f") has RUNPATH '$rp', not \$ORIGIN"
done
for f in "$root"/bin/*; do
  lddout=$(env -i PATH=/usr/bin:/bin ldd "$f" 2>&1) || fail "ldd bin/$(basename "$f"): $lddout"
  # A host library the loader cannot find without LD_LIBRARY_PATH is the host's
  # business (CUDA set up by LD_LIBRARY_PATH only); anything else is a bug.
  while read -r name; do
    if [ -n "$(host_kind "$name")" ]; then
      echo "$prog: note: bin/$(basename "$f"): host library $name is not found here without LD_LIBRARY_PATH" >&2
    else
      fail "bin/$(basename "$f") misses $name"
    fi
  done < <(grep 'not found' <<<"$lddout" | awk '{print $1}')
  # Its own bundled dependencies must come from lib/. (A bundled library that is
  # also a dependency of a host library, e.g. libz of Open MPI, may be loaded
  # from the host first in another program: that is harmless.)
  while IFS= read -r name; do
    [ -n "${bundle_src[$name]:-}" ] || continue
    line=$(grep -E "^[[:space:]]*${name//./\\.} =>" <<<"$lddout" || true)
    if ! grep -qE "=> $root/(bin/\.\./)?lib/" <<<"$line"; then
      fail "bin/$(basename "$f") loads $name from outside the bundle: $(echo "$line" | xargs)"
    fi
  done < <(needed_of "$f")
done
v=$(cd "$check" && env -i PATH=/usr/bin:/bin "$root/bin/moe-train" --version 2>&1) ||
  fail "bin/moe-train --version: $(echo "$v" | tail -n 1)"
[[ "$v" == *"$version"* ]] || fail "bin/moe-train --version printed '$v', expected $version"
h=$(cd "$check" && env -i PATH=/usr/bin:/bin "$root/bin/moe-data" --help 2>&1) ||
  fail "bin/moe-data --help: $(echo "$h" | tail -n 1)"

# ---- report ----
echo "$prog: bundled ${#bundled_report[@]} libraries in lib/:"
printf '  %s\n' "${bundled_report[@]}"
echo "$prog: left to the host (${#host_names[@]}): ${host_names[*]}"
echo "$prog: host needs glibc >= ${need_glibc#GLIBC_}, ${need_glibcxx:-GLIBCXX (none)}, ${need_cxxabi:-CXXABI (none)}"
echo "$prog: programs: $bin_list"
size_b=$(stat -c %s "$out")
echo "$prog: self-check passed (unpacked, RUNPATH, ldd, moe-train --version, moe-data --help with an empty environment)"
echo "$prog: wrote $out ($(numfmt --to=iec --suffix=B "$size_b"), $size_b bytes)"
