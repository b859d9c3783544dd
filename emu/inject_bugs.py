#!/usr/bin/env python3
"""Injects realistic bugs into the CUDA kernels and glue, one at a time, and
reports which the emulated gpu tests catch (docs/cuda.md, "Testing without a
GPU"). For each bug: the source edit is applied to the tree of an emulated
build (-DMOE_CUDA=EMULATED), the build is brought up to date, the tests named
for that bug run (ctest -L emu -R REGEX), and the file is restored, whatever
happens. A bug is caught when a test fails (a wrong number, a fault, an
error); a bug that stops the build is a defect of this list, not a catch.

  emu/inject_bugs.py --build build-emu [--only NAME,...] [--out table.md]
  emu/inject_bugs.py --check [--src DIR]   (no build: every edit applies once)

The tree must be a checkout whose edited files have no uncommitted changes
(use a worktree of your own: git worktree add). Exit 0 when every bug ran;
the table says which were caught; bad input is one line and exit 2.
"""
import argparse
import pathlib
import re
import subprocess
import sys
import time

# (name, what it models, file, old text, new text, ctest -R regex of the
# tests that should see it). `old` must occur exactly once in the file.
BUGS = [
    ("tail-off-by-one", "a grid-stride loop drops the last element",
     "kernels/convert.cu",
     "for (size_t i = global_tid(); i < n; i += grid_stride()) dst[i] = __float2bfloat16_rn(src[i]);",
     "for (size_t i = global_tid(); i + 1 < n; i += grid_stride()) dst[i] = __float2bfloat16_rn(src[i]);",
     r"GpuBf16\.|GpuBackend\."),
    ("missing-syncthreads", "RMSNorm's block sum (elem.cuh's block_reduce) reads the warps' partials before all are written",
     "kernels/elem.cuh", "  if (lane == 0) warp_vals[warp] = v;\n  __syncthreads();\n",
     "  if (lane == 0) warp_vals[warp] = v;\n\n",
     r"GpuRmsNorm\."),
    ("shuffle-half-warp", "the top-K arg-max butterfly starts at offset 8: half the warp is never compared",
     "kernels/router.cu", "  for (int o = 16; o > 0; o >>= 1) {", "  for (int o = 8; o > 0; o >>= 1) {",
     r"GpuRouter\."),
    ("causal-mask-score", "attention computes the score of the key after the query (its weight stays masked)",
     "kernels/attention.cu", "      if (j <= i) {  // j <= i < S", "      if (j <= i + 1 && j < S) {  // j <= i < S",
     r"GpuAttention"),
    ("causal-mask-diagonal", "attention hides each query's own key",
     "kernels/attention.cu", "      if (j <= i) {  // j <= i < S", "      if (j < i) {  // j <= i < S",
     r"GpuAttention"),
    ("adamw-bias-correction", "AdamW's first-moment bias correction uses step + 1",
     "kernels/loss_optim.cu", "c.bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));",
     "c.bc1 = 1.0 - std::pow(beta1, static_cast<double>(step + 1));",
     r"GpuBackend\.|GpuLossOptim\."),
    ("wrong-ldc", "the fp32 linear forward writes y with leading dimension O + 1",
     "src/backend/cuda/cuda_backend.cpp",
     "    sgemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, x, I, 0.0f, y, O);",
     "    sgemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, x, I, 0.0f, y, O + 1);",
     r"GpuBackend\."),
    ("transposed-operand", "the fp32 dx = dy W reads W transposed",
     "src/backend/cuda/cuda_backend.cpp",
     "      sgemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dy, O, accumulate_dx ? 1.0f : 0.0f, dx, I);\n"
     "    sgemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dy, O, 1.0f, dW, I);",
     "      sgemm(CUBLAS_OP_T, CUBLAS_OP_N, I, N, O, W, O, dy, O, accumulate_dx ? 1.0f : 0.0f, dx, I);\n"
     "    sgemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dy, O, 1.0f, dW, I);",
     r"GpuBackend\."),
    ("bf16-wrong-lda", "the bf16 dense forward reads the weight with leading dimension O",
     "src/backend/cuda/bf16_linear.cpp",
     "  gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, I, x, I, 0.0f, y, CUDA_R_16BF, O);",
     "  gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, O, x, I, 0.0f, y, CUDA_R_16BF, O);",
     r"GpuBf16\.|GpuBackend\."),
    ("grouped-swapped-operands", "the grouped expert GEMM's A and B pointer arrays are swapped",
     "src/backend/cuda/bf16_linear.cpp",
     "    ptrs[i] = p.A, ptrs[count + i] = p.B, ptrs[2 * count + i] = p.C;",
     "    ptrs[i] = p.B, ptrs[count + i] = p.A, ptrs[2 * count + i] = p.C;",
     r"GpuBf16\.|GpuBackend\."),
    ("missing-event-wait", "NCCL's stream does not wait for the compute stream's work",
     "src/comm/nccl_comm.cpp", "  MOE_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));\n", "\n",
     r"GpuNccl\.|GpuMultiRank\.|emu_adversarial_test_gpu_nccl"),
    ("wrong-nccl-count", "the all-reduce covers one element too few",
     "src/comm/nccl_comm.cpp",
     "  enqueued(ncclAllReduce(data, data, n, type, ncclSum, comm_, stream_), what);",
     "  enqueued(ncclAllReduce(data, data, n > 1 ? n - 1 : n, type, ncclSum, comm_, stream_), what);",
     r"GpuNccl\.|GpuMultiRank\."),
    ("missing-invalidation", "ZeRO-1's all-gather leaves the bf16 weight copies stale",
     "src/train/optimizer.cpp",
     "    be_.written_elsewhere(w, r.size * sizeof(T));  // the bf16 weight copies follow\n", "\n",
     r"GpuMultiRank\.ZeroOne"),
    ("nonblocking-protocol", "the done event is recorded while NCCL is still in progress",
     "src/comm/nccl_comm.cpp", "  if (rc == ncclInProgress) wait_ready(what);\n", "\n",
     r"GpuNccl\."),
    ("dispatch-offset", "the dispatch scan's offsets start one row late",
     "kernels/dispatch.cu", "      offsets[e] = static_cast<int32_t>(off);",
     "      offsets[e] = static_cast<int32_t>(off + 1);",
     r"GpuDispatch|GpuBackend\."),
    ("bf16-truncation", "fp32 to bf16 truncates instead of rounding to nearest even",
     "kernels/elem.cuh",
     "__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }",
     "__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rz(v); }",
     r"GpuBf16\.|GpuElementwise\.|GpuLossOptim\."),
    # The review's defects, put back one at a time: each fix's test must fail.
    ("topk-limit-unchecked", "moe.top_k above the kernel's 32 reaches the first forward",
     "src/runtime/backend_choice.cpp", "    if (cfg.moe.top_k > kernels::kTopkMaxK)",
     "    if (false && cfg.moe.top_k > kernels::kTopkMaxK)",
     r"GpuCli\.TopK"),
    ("sm86-no-fallback", "hd 128 takes the tensor-core kernels whatever the shared memory",
     "src/backend/cuda/cuda_backend.cpp",
     "    if (fresh) it->second = kernels::attention_tc_supported(hd);",
     "    if (fresh) it->second = hd == 64 || hd == 128;",
     r"emu_sm86_attention_hd128"),
    ("scratch-legacy-memset", "the barrier's scratch is zeroed on the legacy stream",
     "src/comm/nccl_comm.cpp",
     "  MOE_CUDA_CHECK(cudaMemsetAsync(scratch_, 0, sizeof(float), stream_));",
     "  MOE_CUDA_CHECK(cudaMemset(scratch_, 0, sizeof(float)));",
     r"GpuNccl\.|GpuMultiRank\."),
    ("to-host-no-sync", "to_host returns without synchronising its stream",
     "src/backend/cuda/cuda_backend.cpp",
     "    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));\n"
     "    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));\n",
     "    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));\n",
     r"GpuBackend\."),
]


def refuse(why):
    print(f"inject_bugs: {why}", file=sys.stderr)
    sys.exit(2)


def check_edit(src, name, rel, old, new):
    """One line and exit 2 unless bug `name`'s edit applies to exactly one place."""
    f = src / rel
    if not f.exists():
        refuse(f"{name}: {rel} does not exist")
    n = f.read_text().count(old)
    if n != 1:
        refuse(f"{name}: the text to replace occurs {n} times in {rel} (want 1)")
    if old == new:
        refuse(f"{name}: the edit changes nothing")


def run(cmd, cwd, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout, time.time() - t0
    except subprocess.TimeoutExpired as e:
        return 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), time.time() - t0


def failed_tests(ctest_out):
    # ctest's summary lines: "	  3 - GpuRmsNorm.Forward (Failed)".
    return re.findall(r"^\s*\d+ - (\S+) \((?:Failed|Timeout|SEGFAULT|Subprocess aborted|Exception)",
                      ctest_out, flags=re.M)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", help="an emulated build directory (-DMOE_CUDA=EMULATED)")
    ap.add_argument("--check", action="store_true",
                    help="only check that every bug's edit applies exactly once (ctest inject_bugs_patterns)")
    ap.add_argument("--src", default=str(pathlib.Path(__file__).resolve().parent.parent),
                    help="with --check: the source tree (default: this script's checkout)")
    ap.add_argument("--only", default="", help="comma-separated bug names (default: all)")
    ap.add_argument("--out", default="", help="write the markdown table here too")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per bug's tests")
    a = ap.parse_args()
    if a.check:
        for name, _, rel, old, new, _ in BUGS:
            check_edit(pathlib.Path(a.src), name, rel, old, new)
        print(f"inject_bugs: every edit of the {len(BUGS)} bugs applies exactly once in {a.src}")
        return 0
    if not a.build:
        refuse("--build DIR is needed (an emulated build), or --check")
    build = pathlib.Path(a.build).resolve()
    cache = build / "CMakeCache.txt"
    if not cache.exists():
        refuse(f"{build}: no CMakeCache.txt (configure with -DMOE_CUDA=EMULATED first)")
    text = cache.read_text()
    if "MOE_CUDA:STRING=EMULATED" not in text:
        refuse(f"{build} is not an emulated build (-DMOE_CUDA=EMULATED)")
    src = pathlib.Path(next(l.split("=", 1)[1] for l in text.splitlines()
                            if l.startswith("CMAKE_HOME_DIRECTORY:")))
    names = [b[0] for b in BUGS]
    only = [n for n in a.only.split(",") if n]
    for n in only:
        if n not in names:
            refuse(f"--only: no bug named '{n}' (known: {', '.join(names)})")
    bugs = [b for b in BUGS if not only or b[0] in only]
    # Every edit must apply before any work is spent.
    for name, _, rel, old, new, _ in bugs:
        check_edit(src, name, rel, old, new)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", rel], cwd=src,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
        if dirty:
            refuse(f"{rel} has uncommitted changes; use a clean worktree")

    rows = []
    for i, (name, what, rel, old, new, regex) in enumerate(bugs, 1):
        f = src / rel
        original = f.read_text()
        print(f"[{i}/{len(bugs)}] {name}: {what} ({rel})", flush=True)
        try:
            f.write_text(original.replace(old, new))
            rc, out, _ = run(["cmake", "--build", str(build)], src, 3600)
            if rc != 0:
                print(out[-3000:])
                rows.append((name, what, rel, regex, "BUILD FAILED", "", 0.0))
                continue
            rc, out, secs = run(["ctest", "--test-dir", str(build), "-L", "emu", "-R", regex,
                                 "--output-on-failure", "--timeout", str(a.timeout)], src,
                                a.timeout + 60)
            if "No tests were found" in out:
                rows.append((name, what, rel, regex, "NO TESTS", "", secs))
                continue
            caught = rc != 0
            by = ", ".join(failed_tests(out)[:4])
            rows.append((name, what, rel, regex, "caught" if caught else "MISSED", by, secs))
            print(f"    {'caught by ' + by if caught else 'MISSED'} ({secs:.0f} s)", flush=True)
        finally:
            f.write_text(original)
    run(["cmake", "--build", str(build)], src, 3600)  # back to the clean tree's binaries

    lines = ["| # | bug | file | tests run | result | failing tests | s |",
             "|---|---|---|---|---|---|---|"]
    for i, (name, what, rel, regex, res, by, secs) in enumerate(rows, 1):
        lines.append(f"| {i} | {name}: {what} | `{rel}` | `{regex}` | {res} | {by} | {secs:.0f} |")
    caught = sum(r[4] == "caught" for r in rows)
    lines.append("")
    lines.append(f"{caught} of {len(rows)} caught.")
    table = "\n".join(lines)
    print(table)
    if a.out:
        pathlib.Path(a.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
