#include "eval/report.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace lsb {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

const char* color_for(const std::string& dtype) {
  if (dtype == "LSB1") return "#d9534f";
  if (dtype == "PAPER") return "#8e44ad";
  if (dtype == "Q8") return "#f0ad4e";
  return "#5cb85c";  // dense
}

// Horizontal bars: one per tensor, length = SNR in dB (infinite SNR drawn full length).
std::string snr_bars(const std::vector<TensorQuality>& ts) {
  if (ts.empty()) return "<p>No tensors in common.</p>";
  const int row_h = 14, label_w = 330, bar_w = 420, w = label_w + bar_w + 80;
  double mx = 1;
  for (const auto& t : ts)
    if (std::isfinite(t.m.snr_db)) mx = std::max(mx, t.m.snr_db);
  const int h = row_h * static_cast<int>(ts.size()) + 30;
  std::string s = fmt::format(R"(<svg width="{}" height="{}" xmlns="http://www.w3.org/2000/svg" font-family="monospace" font-size="11">)", w, h);
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& t = ts[i];
    const int y = static_cast<int>(i) * row_h + 4;
    const double v = std::isfinite(t.m.snr_db) ? std::max(0.0, t.m.snr_db) : mx;
    const int len = static_cast<int>(v / mx * bar_w);
    s += fmt::format(R"(<text x="{}" y="{}" text-anchor="end">{}</text>)", label_w - 6, y + 10, esc(t.name));
    s += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: SNR {:.2f} dB, rel L2 {:.4f}, cosine {:.5f}</title></rect>)",
                     label_w, y, std::max(1, len), row_h - 3, color_for(t.dtype), esc(t.name), t.dtype, t.m.snr_db,
                     t.m.rel_l2, t.m.cosine);
    s += fmt::format(R"(<text x="{}" y="{}">{} {}</text>)", label_w + len + 4, y + 10,
                     std::isfinite(t.m.snr_db) ? fmt::format("{:.1f} dB", t.m.snr_db) : std::string("exact"), t.dtype);
  }
  s += fmt::format(R"(<text x="{}" y="{}">SNR (dB), longer is better; colour = storage type</text></svg>)", label_w, h - 6);
  return s;
}

std::string layer_curve(const std::vector<double>& cos) {
  if (cos.empty()) return "<p>Per-layer similarity was not measured (run with <code>--layers</code>).</p>";
  const int w = 640, h = 260, l = 60, r = 20, t = 20, b = 40;
  double lo = 1.0;
  for (double c : cos) lo = std::min(lo, c);
  lo = std::max(-1.0, std::floor((lo - 0.02) * 50) / 50);
  auto X = [&](size_t i) { return l + (cos.size() == 1 ? 0.0 : static_cast<double>(i) / (cos.size() - 1) * (w - l - r)); };
  auto Y = [&](double c) { return t + (1.0 - (c - lo) / (1.0 - lo)) * (h - t - b); };
  std::string s = fmt::format(R"(<svg width="{}" height="{}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">)", w, h);
  for (int k = 0; k <= 4; ++k) {
    const double c = lo + (1.0 - lo) * k / 4;
    s += fmt::format(R"(<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" stroke="#ddd"/><text x="{}" y="{:.1f}" text-anchor="end">{:.3f}</text>)",
                     l, w - r, Y(c), Y(c), l - 4, Y(c) + 4, c);
  }
  std::string pts;
  for (size_t i = 0; i < cos.size(); ++i) pts += fmt::format("{:.1f},{:.1f} ", X(i), Y(cos[i]));
  s += fmt::format(R"(<polyline points="{}" fill="none" stroke="#337ab7" stroke-width="2"/>)", pts);
  for (size_t i = 0; i < cos.size(); ++i)
    s += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="#337ab7"><title>layer {}: cosine {:.5f}</title></circle><text x="{:.1f}" y="{}" text-anchor="middle">{}</text>)",
                     X(i), Y(cos[i]), i, cos[i], X(i), h - b + 14, i);
  s += fmt::format(R"(<text x="{}" y="{}" text-anchor="middle">layer (hidden state after it); y: mean cosine similarity to the original</text></svg>)", w / 2, h - 6);
  return s;
}

std::string kld_histogram(const CompareResult& c) {
  if (c.hist_counts.empty()) return "";
  const int w = 640, h = 240, l = 50, r = 20, t = 20, b = 40;
  const int64_t mx = std::max<int64_t>(1, *std::max_element(c.hist_counts.begin(), c.hist_counts.end()));
  const double bw = static_cast<double>(w - l - r) / c.hist_counts.size();
  std::string s = fmt::format(R"(<svg width="{}" height="{}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">)", w, h);
  for (size_t i = 0; i < c.hist_counts.size(); ++i) {
    const double bh = static_cast<double>(c.hist_counts[i]) / mx * (h - t - b);
    s += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="#5bc0de"><title>KLD {:.2g}..{:.2g}: {} positions</title></rect>)",
                     l + i * bw, h - b - bh, std::max(1.0, bw - 1), bh, c.hist_edges[i], c.hist_edges[i + 1], c.hist_counts[i]);
  }
  for (int e = -6; e <= 2; e += 2) {
    const double x = l + (e + 6) / 8.0 * (w - l - r);
    s += fmt::format(R"(<text x="{:.1f}" y="{}" text-anchor="middle">1e{}</text>)", x, h - b + 14, e);
  }
  s += fmt::format(R"(<text x="{}" y="{}" text-anchor="middle">KL divergence per scored position (log scale); mean {:.4f}, median {:.4f}, p99 {:.4f}</text></svg>)",
                   w / 2, h - 6, c.kld_mean, c.kld_median, c.kld_p99);
  return s;
}

}  // namespace

std::string render_html_report(const ReportInput& in) {
  const CompareResult& c = in.cmp;
  std::string s = R"(<!DOCTYPE html><html><head><meta charset="utf-8"><title>lsb quality report</title>
<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}</style>
</head><body>)";
  s += "<h1>Compression quality report</h1>";
  s += fmt::format("<p>Model <code>{}</code> against the original <code>{}</code> on <code>{}</code>, {} windows of {} tokens, {} scored positions (llama.cpp method).</p>",
                   esc(in.model_path), esc(in.ref_path), esc(in.text_path), c.model.n_chunks, c.model.ctx, c.model.n_scored);
  s += "<table><tr><th>measure</th><th>value</th></tr>";
  s += fmt::format("<tr><td>PPL original</td><td>{:.4f} ± {:.4f}</td></tr>", c.ref.ppl, c.ref.ppl_stderr);
  s += fmt::format("<tr><td>PPL model</td><td>{:.4f} ± {:.4f}</td></tr>", c.model.ppl, c.model.ppl_stderr);
  s += fmt::format("<tr><td>Δ PPL / ratio</td><td>{:+.4f} / {:.4f}</td></tr>", c.delta_ppl, c.ppl_ratio);
  s += fmt::format("<tr><td>KLD mean ± stderr</td><td>{:.5f} ± {:.5f}</td></tr>", c.kld_mean, c.kld_stderr);
  s += fmt::format("<tr><td>KLD median / p90 / p95 / p99 / max</td><td>{:.5f} / {:.4f} / {:.4f} / {:.4f} / {:.3f}</td></tr>",
                   c.kld_median, c.kld_p90, c.kld_p95, c.kld_p99, c.kld_max);
  s += fmt::format("<tr><td>same top-1 token</td><td>{:.2f} %</td></tr></table>", 100.0 * c.top1_agreement);
  s += "<h2>Per-layer similarity</h2>" + layer_curve(c.layer_cosine);
  s += "<h2>KL divergence of next-token distributions</h2>" + kld_histogram(c);
  s += "<h2>Per-tensor signal-to-noise ratio</h2>" + snr_bars(in.tensors);
  s += "</body></html>\n";
  return s;
}

}  // namespace lsb
