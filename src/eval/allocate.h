// `lsb compress --target-bpw X`: one code per matrix (embedding and head included) chosen to
// minimise the model's predicted loss with the whole file at most X bits per weight
// (docs/CALIBRATION.md, "Allocation"). Measured, not guessed:
//   1. every candidate code quantizes every matrix (with the calibration statistics); each gives
//      the matrix's exact blob size and its proxy error e = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) (the
//      relative squared error for the embedding, which has no input statistics);
//   2. sensitivity: for each kind of matrix (embed, head, q, k, v, o, gate, up, down), the KL
//      divergence of the model with only that kind quantized at a reference code, on windows
//      from the end of the calibration text, against the original; factor a_kind =
//      KLD / Σ e(m, reference)^P;
//   3. predicted KLD of a choice = Σ_m a_kind(m) e(m, code_m)^P (P = 1.2, docs), minimised by
//      exact dynamic programming over the bytes left once everything else in the file (norms,
//      tokenizer, metadata, directory, alignment) is counted.
// The allocation lives above the pipeline because step 2 runs the model and compares it; the
// file is then written by compress_model with the plan and the blobs already made.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/compress.h"

namespace lsb {

struct AllocateOptions {
  double target_bpw = 0;
  std::string sens_text;  // text for the sensitivity runs; "" = the calibration text
  int sens_windows = 4;   // windows of `sens_ctx` tokens from the end of that text
  int sens_ctx = 512;
  double exponent = 1.2;
  uint64_t cache_limit_bytes = 4ull << 30;  // blobs kept for the final write; beyond, re-quantized
};

struct AllocCandidate {
  DType dtype = DType::F32;
  std::string params;  // canonical parameter text
  std::string label;   // e.g. "vq4/b6/g256"
};
// The codes the allocator chooses from, lowest bits first.
std::vector<AllocCandidate> allocation_candidates();
// "embed", "head", "q", "k", "v", "o", "gate", "up", "down"; "" for anything else.
std::string matrix_kind(std::string_view tensor_name);

struct AllocMatrix {
  std::string name, kind;
  std::vector<uint64_t> bytes;  // per candidate; UINT64_MAX = the code cannot store this matrix
  std::vector<double> err;      // per candidate, proxy error
};
struct Allocation {
  std::vector<int> choice;  // per matrix, index of its candidate
  double predicted = 0;     // Σ a_kind e^P
  uint64_t bytes = 0;       // of the chosen blobs
};
// Exact DP (sizes in buckets of budget/16384 bytes, rounded up, so the result always fits).
// Throws lsb::Error naming `where` when even the smallest codes do not fit.
Allocation allocate_bits(const std::vector<AllocMatrix>& ms, const std::map<std::string, double>& factor,
                         double exponent, uint64_t budget_bytes, const std::string& where);

struct TargetReport {
  CompressReport compress;
  double predicted_kld = 0;
  std::map<std::string, double> kind_kld, kind_factor;
  std::vector<std::string> codes;  // per matrix in file order: "name=label"
};

// Measures, allocates and writes `out_path`. `opt` carries the calibration (required: a text or
// a statistics file), tokenizer, threads-independent settings and progress; its scheme and
// keep rules are ignored.
TargetReport compress_to_target(const std::string& src_path, const std::string& out_path, CompressOptions opt,
                                const AllocateOptions& a);

// Lines for people: per kind, the KLD measured at the reference code, and how many matrices got
// each code; then the predicted KLD.
std::string allocation_summary(const TargetReport& r);

}  // namespace lsb
