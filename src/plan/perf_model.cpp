#include "plan/perf_model.h"

#include "model/flops.h"

namespace moe {

std::optional<DeviceSpec> device_spec_by_key(const std::string& key) {
  // Datasheet figures (dense, no sparsity); A100 is the 80 GB SXM part.
  if (key == "h100") return DeviceSpec{"H100 SXM", 989.4, 66.9, 3.35};
  if (key == "h100-pcie") return DeviceSpec{"H100 PCIe", 756.0, 51.2, 2.0};
  if (key == "h200") return DeviceSpec{"H200", 989.4, 66.9, 4.8};
  if (key == "a100") return DeviceSpec{"A100 SXM 80GB", 312.0, 19.5, 2.04};
  return std::nullopt;
}

std::optional<DeviceSpec> device_spec(const std::string& name) {
  const auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("NVL")) return std::nullopt;
  if (has("H200")) return device_spec_by_key("h200");
  if (has("H100")) return device_spec_by_key(has("PCIe") ? "h100-pcie" : "h100");
  if (has("A100")) return device_spec_by_key("a100");
  return std::nullopt;
}

// Per token, training (forward + backward = 3 x the forward's 2 FLOPs per
// multiply-add for a matmul); bytes are bf16 activations (2), fp32 state (4).
StepExpectation expected_step(const Config& cfg, const DeviceSpec& dev, const Efficiency& eff) {
  const ModelConfig& m = cfg.model;
  const MoeConfig& e = cfg.moe;
  const double D = m.hidden, S = m.seq_len, V = m.vocab_size, K = e.top_k, E = e.n_routed;
  const double Fe = e.expert_intermediate, Fs = double(e.n_shared) * e.expert_intermediate;
  const double Fd = m.dense_intermediate;
  const double L = m.layers, Lm = m.moe_layers(), Ld = m.first_dense_layers;
  const double tokens = double(cfg.train.global_batch) * S;

  StepExpectation x{};
  auto& att = x[int(Phase::Attention)];
  auto& exp = x[int(Phase::ExpertGemm)];
  auto& dis = x[int(Phase::Dispatch)];
  auto& rou = x[int(Phase::Router)];
  auto& opt = x[int(Phase::Optimizer)];
  auto& oth = x[int(Phase::Other)];

  // attention: qkv and output projections; the causal kernel, forward
  // 2 S D per token (QK^T and PV over S/2 keys on average) and backward
  // 2.5 x that; RoPE reads and writes q and k forward and backward.
  att.matmul_flops = 6 * 4 * D * D * L;
  att.attention_flops = 3.5 * 2 * S * D * L;
  att.bytes = 16 * D * L;
  // expert_gemm: K routed and the fused shared experts (three projections
  // each); SwiGLU reads a13 and writes h, backward reads a13 and dh and
  // writes da13.
  exp.matmul_flops = 6 * 3 * D * (K * Fe + Fs) * Lm;
  exp.bytes = 16 * (K * Fe + Fs) * Lm;
  // dispatch: permute (K rows out), combine (K rows in, y read and
  // written), and their backward (dy read per slot, dyp written, K rows
  // summed into dx).
  dis.bytes = (14 * K * D + 8 * D) * Lm;
  // router: the fp32 SGEMM forward and backward; the bf16 input widened to
  // fp32 (both passes), the fp32 dx staged and added into bf16; scores,
  // top-K and their backward over E fp32 values.
  rou.fp32_flops = 6 * D * E * Lm;
  rou.bytes = (24 * D + 16 * E) * Lm;
  // other: LM head, the dense FFN; loss chunks (the head writes bf16
  // logits, the loss reads them three times and writes the gradient), the
  // norms (residual add + norm forward, norm backward with its bf16 copy),
  // embedding, the dense SwiGLU.
  oth.matmul_flops = 6 * D * V + 6 * 3 * D * Fd * Ld;
  oth.bytes = 8 * V + (2 * L + 1) * 34 * D + 16 * D + 16 * Fd * Ld;
  for (auto& p : x) {
    p.matmul_flops *= tokens;
    p.attention_flops *= tokens;
    p.fp32_flops *= tokens;
    p.bytes *= tokens;
  }
  // optimizer, per parameter and step: zero the gradient (4), its norm (4),
  // AdamW reads p, g, m, v and writes p, m, v (28), the bf16 copy remade
  // (read 4, write 2).
  opt.bytes = 42.0 * double(total_parameters(cfg.model, cfg.moe));

  for (auto& p : x)
    p.seconds = p.matmul_flops / (eff.gemm * dev.bf16_tflops * 1e12) +
                p.attention_flops / (eff.attention * dev.bf16_tflops * 1e12) +
                p.fp32_flops / (eff.fp32_gemm * dev.fp32_tflops * 1e12) +
                p.bytes / (eff.memory * dev.dram_tbps * 1e12);
  return x;
}

}  // namespace moe
