#!/usr/bin/env bash
# Builds a real demo corpus offline from Debian packages and prepares it for
# moe-train (configs/demo.yaml): about 75 MB of text, ~25M tokens, about a
# minute on 2 cores once moe-data is built (docs/data.md, Demo corpus).
#   scripts/demo_corpus.sh [OUTDIR]      (default data/demo)
# Sources:
#   - GCIDE, the Collaborative International Dictionary of English (package
#     dict-gcide, GPL), installed with apt-get when missing: OUTDIR/raw/gcide.txt
#   - the Python standard library of this machine, one JSONL document per .py
#     file: OUTDIR/raw/python_stdlib.jsonl
# Environment: DEMO_VOCAB (8192; configs/demo.yaml expects 8192),
# DEMO_MAX_SENTENCES (400000 lines sampled to train the tokenizer),
# BUILD_DIR (build). Re-running keeps the raw files and rebuilds the rest.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/data/demo}"
vocab="${DEMO_VOCAB:-8192}"
max_sentences="${DEMO_MAX_SENTENCES:-400000}"
build_dir="${BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$repo/$build_dir" ;; esac
gcide_dz=/usr/share/dictd/gcide.dict.dz
start=$(date +%s)

mkdir -p "$out/raw"
out="$(cd "$out" && pwd)"

# ---- raw corpus ----
if [ ! -s "$out/raw/gcide.txt" ]; then
  if [ ! -f "$gcide_dz" ]; then
    echo "demo: installing dict-gcide (GCIDE dictionary) with apt-get"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -qq --no-install-recommends dict-gcide >/dev/null; then
      $sudo apt-get update -qq
      $sudo apt-get install -y -qq --no-install-recommends dict-gcide >/dev/null
    fi
  fi
  # dictzip files are gzip files with an index in the header.
  gzip -dc "$gcide_dz" > "$out/raw/gcide.txt.tmp"
  mv "$out/raw/gcide.txt.tmp" "$out/raw/gcide.txt"
fi

if [ ! -s "$out/raw/python_stdlib.jsonl" ]; then
  python3 - "$out/raw/python_stdlib.jsonl.tmp" <<'PY'
import json, os, sys, sysconfig, tokenize
root = sysconfig.get_paths()["stdlib"]
n = 0
with open(sys.argv[1], "w", encoding="utf-8") as out:
    for d, dirs, files in os.walk(root):
        # Installed third-party packages are not the standard library.
        dirs[:] = sorted(x for x in dirs if x not in ("site-packages", "dist-packages", "__pycache__"))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            p = os.path.join(d, f)
            try:
                with tokenize.open(p) as fh:  # honours PEP 263 coding cookies
                    text = fh.read()
            except (SyntaxError, UnicodeDecodeError):
                with open(p, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            out.write(json.dumps({"text": text, "path": os.path.relpath(p, root)},
                                 ensure_ascii=False) + "\n")
            n += 1
print(f"demo: {n} Python files from {root}")
PY
  mv "$out/raw/python_stdlib.jsonl.tmp" "$out/raw/python_stdlib.jsonl"
fi
du -h "$out/raw/gcide.txt" "$out/raw/python_stdlib.jsonl"

# ---- moe-data ----
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  BUILD_DIR="$build_dir" "$repo/scripts/build.sh"
fi
if ! log=$(cmake --build "$build_dir" --target moe-data -j "$(nproc)" 2>&1); then
  echo "$log" >&2
  exit 1
fi
moe_data="$build_dir/moe-data"

"$moe_data" tokenizer-train --input "$out/raw" --vocab-size "$vocab" \
  --max-sentences "$max_sentences" --output "$out/tokenizer"
"$moe_data" prepare --tokenizer "$out/tokenizer.model" --input "$out/raw" --output "$out" --force

python3 - "$out/summary.json" "$vocab" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for split in ("train", "val"):
    print(f"demo: {split}: {s[split]['documents']} documents, {s[split]['tokens']} tokens, "
          f"{len(s[split]['shards'])} shard(s)")
print(f"demo: prepare read {s['input_bytes'] / 1e6:.1f} MB at {s['mb_per_s']:.1f} MB/s "
      f"with {s['threads']} threads")
if int(sys.argv[2]) != 8192:
    print(f"demo: note: configs/demo.yaml has model.vocab_size 8192; "
          f"add --set model.vocab_size={sys.argv[2]}")
PY
echo "demo: done in $(( $(date +%s) - start )) s: shards and tokenizer in $out"
if [ "$out" = "$repo/data/demo" ]; then
  echo "demo: train with: cd $repo && $build_dir/moe-train --config configs/demo.yaml"
else
  echo "demo: train with: cd $repo && $build_dir/moe-train --config configs/demo.yaml --set data.path=$out"
fi
