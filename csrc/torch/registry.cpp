// Every op schema of qwen35_native, sorted by kernel family (STYLE habit 13). Implementations register in
// csrc/torch/<family>_ops.cpp; fake (meta) implementations in python/qwen35_native/ops/<family>.py.
#include <torch/library.h>

TORCH_LIBRARY(qwen35_native, m) {
  // ---- attention ----
  m.def("attention_prep(Tensor qkv, Tensor q_norm_weight, Tensor k_norm_weight, Tensor positions, "
        "Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping, Tensor inv_freq, int[] mrope_section, "
        "float eps, Tensor(c!) q_out, Tensor(d!) gate_out) -> ()");
  m.def("paged_prefill_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor cu_seqlens_q, Tensor seq_lens, "
        "Tensor block_tables, Tensor? gate, float scale, Tensor(a!) out, int arch=0) -> ()");
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor seq_lens, Tensor block_tables, "
        "Tensor? gate, float scale, int num_splits, Tensor(a!) out) -> ()");
  m.def("varlen_attention(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens, float scale, bool causal, "
        "Tensor(a!) out) -> ()");
  // ---- linear (csrc/torch/linear_ops.cpp) ----
  m.def("skinny_linear(Tensor x, Tensor weight, bool swiglu, Tensor(a!) out) -> ()");
  // ---- norm ----
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("fused_add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  // ---- gdn (csrc/torch/gdn_conv_ops.cpp, gdn_scan_ops.cpp, gdn_layer_ops.cpp); outputs allocated by the caller ----
  m.def("causal_conv1d(Tensor x, Tensor weight, Tensor? cu_seqlens, Tensor(a!)? conv_state, Tensor? slots, "
        "Tensor? has_initial_state, bool silu, Tensor(b!) y) -> ()");
  m.def("causal_conv1d_update(Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor slots, bool silu, "
        "Tensor(b!) y) -> ()");
  m.def("gdn_gating(Tensor a, Tensor b, Tensor A_log, Tensor dt_bias, Tensor(a!) g, Tensor(b!) beta) -> ()");
  m.def("gated_rms_norm(Tensor x, Tensor z, Tensor weight, float eps, Tensor(a!) y) -> ()");
  m.def("chunk_gated_delta_rule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float scale, "
        "Tensor? initial_state, Tensor cu_seqlens, bool use_qk_l2norm, int segment_len, float shortcut_log_decay, "
        "Tensor(a!) o, Tensor(b!)? final_state, int arch=0) -> ()");
  m.def("fused_recurrent_gated_delta_rule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float scale, "
        "Tensor? initial_state, Tensor? cu_seqlens, int num_seqs, bool use_qk_l2norm, Tensor(a!) o, "
        "Tensor(b!)? final_state, Tensor(c!)? intermediate_states) -> ()");
  m.def("gdn_prefill(Tensor mixed_qkv, Tensor z, Tensor a, Tensor b, Tensor conv_weight, Tensor A_log, "
        "Tensor dt_bias, Tensor norm_weight, Tensor(a!) conv_state, Tensor(b!) ssm_state, Tensor cu_seqlens, "
        "Tensor slots, Tensor has_initial_state, float eps, int segment_len, float shortcut_log_decay, "
        "Tensor(c!) out) -> ()");
  m.def("gdn_decode(Tensor mixed_qkv, Tensor z, Tensor a, Tensor b, Tensor conv_weight, Tensor A_log, "
        "Tensor dt_bias, Tensor norm_weight, Tensor(a!) conv_state, Tensor(b!) ssm_state, Tensor slots, float eps, "
        "Tensor(c!) out, Tensor? out_slots=None) -> ()");
  // ---- moe ----
  m.def("moe_route(Tensor logits, int top_k, Tensor(a!) topk_weights, Tensor(b!) topk_ids) -> ()");
  m.def("fused_moe(Tensor hidden, Tensor w13, Tensor w2, Tensor topk_weights, Tensor topk_ids, int expert_offset, "
        "Tensor? shared_out, Tensor? shared_gate_w, int? block_m=None) -> Tensor");
  m.def("moe_align(Tensor topk_ids, int expert_offset, int num_local_experts, int block_m, Tensor(a!) sorted_pairs, "
        "Tensor(b!) tile_experts) -> ()");
  m.def("moe_permute(Tensor hidden, Tensor sorted_pairs, Tensor tile_experts, int top_k, int num_local_experts, "
        "int block_m, Tensor(a!) sorted_rows) -> ()");
  m.def("moe_gate_up(Tensor hidden, Tensor w13, Tensor sorted_pairs, Tensor tile_experts, int top_k, int block_m, "
        "Tensor(a!) act, Tensor? sorted_rows=None) -> ()");
  m.def("moe_down(Tensor act, Tensor w2, Tensor topk_weights, Tensor sorted_pairs, Tensor tile_experts, int block_m, "
        "Tensor(a!) expert_out) -> ()");
  m.def("moe_combine(Tensor expert_out, Tensor topk_ids, int expert_offset, int num_local_experts, Tensor? hidden, "
        "Tensor? shared_out, Tensor? shared_gate_w, Tensor(a!) out) -> ()");
}
