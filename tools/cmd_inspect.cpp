// lsb inspect FILE.lsb: header, config, provenance and the per-tensor quality table stored at
// compress time; --verify recomputes every tensor checksum (exit code 1 naming the first bad one).
#include <cmath>
#include <cstdio>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "pipeline/compress.h"
#include "format/lsb_reader.h"
#include "quant/scheme.h"

namespace lsb::cli {
namespace {

double num_or(const nlohmann::json& j, const char* key, double null_value) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return null_value;
  return it->get<double>();
}

}  // namespace

void add_inspect(CLI::App& app) {
  struct Opts {
    std::string file;
    bool verify = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand("inspect", "Show what a .lsb file holds: header, config, provenance, per-tensor quality");
  c->add_option("file", o->file, ".lsb file")->required();
  c->add_flag("--verify", o->verify, "recompute every tensor checksum (and check every blob's structure)");
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    format::LsbReader r(o->file);
    const nlohmann::json& meta = r.metadata();
    std::map<std::string, const nlohmann::json*> stored;
    if (meta.contains("tensors") && meta["tensors"].is_array())
      for (const nlohmann::json& t : meta["tensors"])
        if (t.is_object() && t.contains("name") && t["name"].is_string()) stored[t["name"].get<std::string>()] = &t;

    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    std::vector<TensorReport> rows;
    uint64_t params = 0;
    for (size_t i = 0; i < r.tensors().size(); ++i) {
      const TensorInfo& t = r.tensors()[i];
      TensorReport tr;
      tr.name = t.name;
      tr.shape = t.shape;
      tr.scheme = std::string(quant::scheme_name(t.dtype));
      tr.params = t.params;
      tr.bytes = t.nbytes;
      tr.bpw = static_cast<double>(t.nbytes) * 8.0 / static_cast<double>(t.numel());
      params += static_cast<uint64_t>(t.numel());
      tr.metrics.mae = tr.metrics.rel_l2 = tr.metrics.snr_db = tr.metrics.cosine = nan;
      if (auto it = stored.find(t.name); it != stored.end()) {
        const nlohmann::json& m = *it->second;
        tr.outliers = static_cast<uint64_t>(num_or(m, "outliers", 0));
        tr.metrics.mae = num_or(m, "mae", nan);
        tr.metrics.mse = num_or(m, "mse", nan);
        tr.metrics.rel_l2 = num_or(m, "rel_l2", inf);  // null = +inf (written for non-finite values)
        tr.metrics.snr_db = num_or(m, "snr_db", inf);
        tr.metrics.cosine = num_or(m, "cosine", nan);
        tr.metrics.max_abs_err = num_or(m, "max_abs_err", nan);
        tr.out_error = num_or(m, "out_error", -1);  // null: not measured
        if (m.contains("calib_input") && m["calib_input"].is_string()) tr.calib_input = m["calib_input"];
      }
      rows.push_back(std::move(tr));
    }
    const format::FileHeader& h = r.header();
    const double bpw = params ? static_cast<double>(r.file_size()) * 8.0 / static_cast<double>(params) : 0.0;

    if (o->verify) r.verify_all();  // throws "PATH: checksum mismatch in tensor 'NAME'" -> exit 1

    if (o->json) {
      nlohmann::json tensors = nlohmann::json::array();
      for (size_t i = 0; i < rows.size(); ++i) {
        nlohmann::json j = tensor_report_json(rows[i]);
        const format::TensorEntry& e = r.entries()[i];
        j["layer"] = e.layer;
        j["offset"] = e.data_offset;
        j["checksum"] = fmt::format("{:016x}", e.data_checksum);
        tensors.push_back(std::move(j));
      }
      nlohmann::json j = {{"file", o->file},
                          {"version", fmt::format("{}.{}", h.version_major, h.version_minor)},
                          {"file_size", r.file_size()},
                          {"params", params},
                          {"bpw", bpw},
                          {"ratio_vs_bf16", r.file_size() ? params * 2.0 / static_cast<double>(r.file_size()) : 0.0},
                          {"tensor_count", h.tensor_count},
                          {"tokenizer_kind", h.tokenizer_kind},
                          {"tokenizer_bytes", h.tokenizer_size},
                          {"metadata_bytes", h.metadata_size},
                          {"header_checksum", fmt::format("{:016x}", h.header_checksum)},
                          {"config", meta.value("config", nlohmann::json::object())},
                          {"provenance", meta.value("provenance", nlohmann::json::object())},
                          {"options", meta.value("options", nlohmann::json::object())},
                          {"layers", meta.value("layers", nlohmann::json::array())},
                          {"calibration", meta.value("calibration", nlohmann::json(nullptr))},
                          {"allocation", meta.value("allocation", nlohmann::json(nullptr))},
                          {"verified", o->verify},
                          {"tensors", std::move(tensors)}};
      print_json(j);
      return;
    }
    std::printf("%s: .lsb version %u.%u, %llu bytes, %u tensors, %llu params, %.4f bits per weight (%.2fx smaller than bf16)\n",
                o->file.c_str(), h.version_major, h.version_minor, static_cast<unsigned long long>(r.file_size()),
                h.tensor_count, static_cast<unsigned long long>(params), bpw,
                r.file_size() ? params * 2.0 / static_cast<double>(r.file_size()) : 0.0);
    std::printf("metadata %llu bytes, tokenizer %llu bytes (kind %u), data section %llu bytes at %llu, header xxh3 %016llx\n",
                static_cast<unsigned long long>(h.metadata_size), static_cast<unsigned long long>(h.tokenizer_size),
                h.tokenizer_kind, static_cast<unsigned long long>(h.data_size),
                static_cast<unsigned long long>(h.data_offset), static_cast<unsigned long long>(h.header_checksum));
    std::printf("config: %s\n", meta.value("config", nlohmann::json::object()).dump().c_str());
    std::printf("provenance: %s\n", meta.value("provenance", nlohmann::json::object()).dump().c_str());
    std::printf("options: %s\n", meta.value("options", nlohmann::json::object()).dump().c_str());
    for (const format::LayerRange& l : r.layers())
      std::printf("layer %d: [%llu, +%llu)\n", l.layer, static_cast<unsigned long long>(l.offset),
                  static_cast<unsigned long long>(l.size));
    std::printf("%s", tensor_table(rows).c_str());
    if (meta.contains("calibration") && meta["calibration"].is_object())
      std::printf("calibration: %s\n", meta["calibration"].dump().c_str());
    if (meta.contains("allocation") && meta["allocation"].is_object()) {
      // The recipe --target-bpw chose: the code of each matrix is in the table's params; here
      // what it was chosen from.
      const nlohmann::json& a = meta["allocation"];
      nlohmann::json brief = a;
      brief.erase("codes");
      std::printf("allocation: %s\n", brief.dump().c_str());
      if (a.contains("codes") && a["codes"].is_object()) {
        std::map<std::string, int> count;
        for (const auto& [name, code] : a["codes"].items())
          if (code.is_string()) count[code.get<std::string>()]++;
        std::string list;
        for (const auto& [code, n] : count) list += fmt::format("{}{} x{}", list.empty() ? "" : ", ", code, n);
        std::printf("allocation codes: %s\n", list.c_str());
      }
    }
    if (o->verify) std::printf("verify: all %zu tensor checksums and blobs OK\n", rows.size());
  });
}

}  // namespace lsb::cli
