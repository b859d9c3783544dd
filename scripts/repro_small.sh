#!/usr/bin/env bash
# The paper's main comparison at small scale, end to end: builds moe-lfb and
# the demo corpus if needed, trains Loss-Free, the aux-loss baseline and no
# balancing for each seed (scripts/sweep.sh: resumable, finished runs are
# skipped) and writes the report (scripts/report.py). About an hour on 2 CPU
# cores for the default three presets x three seeds. docs/reproduction.md.
#   scripts/repro_small.sh [--seeds 1,2,3] [--full] [--gpu] [--out DIR] [--set k=v]...
#     --seeds S,...  seeds of every preset (default 1,2,3)
#     --full         also the u sweep, the alpha sweep and DeepSeek-V3's recipe
#                    (Loss-Free + the sequence-wise loss, and the small twin of
#                    configs/recipes/deepseek_v3_style.yaml; configs/repro/:
#                    18 more runs, about twice as long again)
#     --gpu          train on CUDA (train.backend=cuda); minutes on one GPU
#     --out DIR      report folder (default report)
#     --set k=v      passed to every run (repeatable), e.g. --set train.threads=2
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
seeds=1,2,3 full=0 out=report
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="${2:?--seeds needs a list like 1,2,3}"; shift 2 ;;
    --full) full=1; shift ;;
    --gpu) sets+=(--set train.backend=cuda); shift ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --set) sets+=(--set "${2:?--set needs key=value}"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "repro_small.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

presets=(small_loss_free small_aux_loss small_no_balance)
[ "$full" -eq 1 ] && presets+=(small_lf_u1e-4 small_lf_u1e-2 small_aux_alpha1e-2 small_aux_alpha1e-4
                                small_lf_seq_aux small_deepseek_v3_style)

[ -x build/moe-train ] || { echo "repro_small.sh: building (scripts/build.sh)"; scripts/build.sh; }
if ! ls data/demo/train_*.bin > /dev/null 2>&1 || ! ls data/demo/val_*.bin > /dev/null 2>&1; then
  echo "repro_small.sh: preparing the demo corpus (scripts/demo_corpus.sh, about a minute)"
  scripts/demo_corpus.sh
fi

configs=()
for p in "${presets[@]}"; do configs+=("configs/repro/$p.yaml"); done
t0=$(date +%s)
rc=0
scripts/sweep.sh --seeds "$seeds" "${sets[@]}" "${configs[@]}" || rc=$?
[ "$rc" -eq 2 ] && exit 2  # bad arguments: sweep.sh said which

# The report covers every run that finished, even when some failed.
dirs=()
IFS=',' read -r -a seed_list <<< "$seeds"
for p in "${presets[@]}"; do
  for s in "${seed_list[@]}"; do
    [ -f "runs/$p/seed$s/metrics.jsonl" ] && dirs+=("runs/$p/seed$s")
  done
done
[ ${#dirs[@]} -gt 0 ] || { echo "repro_small.sh: no run produced metrics" >&2; exit 1; }
python3 scripts/report.py --out "$out" --title "moe-lfb: small-scale reproduction" "${dirs[@]}"
echo "repro_small.sh: done in $(( ($(date +%s) - t0) / 60 )) min: $out/index.html ($out/README.md)"
exit "$rc"
