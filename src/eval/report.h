// A self-contained HTML page (inline SVG, no scripts, no external files) with the pictures a
// user would rather look at than read: per-tensor SNR bars, per-layer cosine curve, KLD histogram.
#pragma once
#include <string>
#include <vector>

#include "eval/compare.h"
#include "eval/tensor_quality.h"

namespace lsb {

struct ReportInput {
  std::string model_path, ref_path, text_path;
  CompareResult cmp;
  std::vector<TensorQuality> tensors;
};

std::string render_html_report(const ReportInput& in);

}  // namespace lsb
