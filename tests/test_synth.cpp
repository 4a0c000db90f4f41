// Synthetic checkpoints: the folders `lsb synth` writes open like real Hugging Face folders,
// run, are byte-deterministic per seed, have heavy-tailed weights with outlier input channels,
// shard with a valid index, stream with small memory, and refuse to clobber existing output.
// Also the streaming safetensors writer on its own.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include "base/fp16.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "lib/synth.h"
#include "base/error.h"
#include "io/tensor_source.h"
#include "model/model_tensors.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

lsb::SynthOptions quiet_options(uint64_t seed = 0) {
  lsb::SynthOptions o;
  o.seed = seed;
  o.progress = false;
  return o;
}

std::vector<float> tensor_as_floats(const lsb::TensorSource& src, const std::string& name) {
  const lsb::TensorInfo& t = src.get(name);
  EXPECT_EQ(t.dtype, lsb::DType::BF16) << name;
  auto bytes = src.data(t);
  std::vector<float> out(bytes.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t b;
    std::memcpy(&b, bytes.data() + 2 * i, 2);
    out[i] = lsb::bf16_to_f32(b);
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The tiny model, generated once for the tests that only read it.
const fs::path& tiny_model() {
  static const fs::path dir = [] {
    fs::path d = lsbtest::temp_dir() / "tiny";
    lsb::synth_model(d.string(), "tiny", quiet_options(0));
    return d;
  }();
  return dir;
}

}  // namespace

TEST(SynthShapes, KnownShapesHaveRealModelSizes) {
  // Parameter counts of the real checkpoints (from their model cards), to 1%.
  const std::pair<const char*, double> real[] = {{"llama2-7b", 6.74e9}, {"mistral-7b", 7.24e9}, {"tinyllama-1.1b", 1.10e9}};
  for (const auto& [name, params] : real) {
    const lsb::SynthShape& s = lsb::synth_shape(name);
    EXPECT_NEAR(double(s.config.n_params_estimate()), params, params * 0.01) << name;
    // config.json as written reads back to the same config.
    const nlohmann::json j = nlohmann::json::parse(lsb::synth_hf_config(s, lsb::DType::BF16, 3).dump());
    const lsb::ModelConfig c = lsb::config_from_hf_json(j, name);
    EXPECT_EQ(lsb::config_to_json(c), lsb::config_to_json(s.config)) << name;
    EXPECT_EQ(j.at("lsb_synthetic"), true);
  }
  const lsb::ModelConfig& m = lsb::synth_shape("mistral-7b").config;
  EXPECT_EQ(m.n_kv_heads, 8);
  EXPECT_EQ(m.max_seq_len, 32768);
  EXPECT_FLOAT_EQ(m.rope_theta, 1e6f);
  EXPECT_EQ(lsb::synth_shape("llama2-7b").config.n_kv_heads, 32);
}

TEST(SynthShapes, UnknownShapeListsKnownOnes) {
  try {
    lsb::synth_shape("llama-9000");
    FAIL() << "no error for an unknown shape";
  } catch (const lsb::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("llama-9000"), std::string::npos) << msg;
    for (const lsb::SynthShape& s : lsb::synth_shapes()) EXPECT_NE(msg.find(s.name), std::string::npos) << msg;
  }
  const fs::path out = lsbtest::temp_dir() / "never";
  auto r = lsbtest::run_lsb("synth --shape llama-9000 -o " + out.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("unknown shape"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tinyllama-1.1b"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST(SynthModel, TinyRoundTripsThroughOpenModel) {
  const fs::path& dir = tiny_model();
  auto src = lsb::open_model(dir.string());
  const lsb::ModelConfig& want = lsb::synth_shape("tiny").config;
  EXPECT_EQ(lsb::config_to_json(src->config()), lsb::config_to_json(want));
  EXPECT_NO_THROW(lsb::validate_tensors(*src));
  const auto expected = lsb::expected_tensors(want);
  ASSERT_EQ(src->tensors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const lsb::TensorInfo* t = src->find(expected[i].name);
    ASSERT_NE(t, nullptr) << expected[i].name;
    EXPECT_EQ(t->shape, expected[i].shape) << expected[i].name;
    EXPECT_EQ(t->dtype, lsb::DType::BF16) << expected[i].name;
    EXPECT_EQ(src->tensors()[i].name, expected[i].name) << "tensors not in HF order";  // one shard: file order
  }
  const nlohmann::json cfg = nlohmann::json::parse(slurp(dir / "config.json"));
  EXPECT_EQ(cfg.at("lsb_synthetic"), true);
  EXPECT_EQ(cfg.at("architectures")[0], "LlamaForCausalLM");
  EXPECT_EQ(cfg.at("torch_dtype"), "bfloat16");
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir / "model-00001-of-00001.safetensors"));
  const lsb::TokenizerBlob tok = src->tokenizer();
  EXPECT_EQ(tok.kind, lsb::TokenizerBlob::Kind::SentencePiece);
}

TEST(SynthModel, TinyRunsGreedy) {
  auto r = lsbtest::run_lsb("run " + tiny_model().string() + " -n 8 --temp 0 -p 'The river' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_GT(j.at("n_prompt").get<int>(), 1);
  if (j.at("stop_reason") != "eos") {
    EXPECT_EQ(j.at("n_generated").get<int>(), 8) << r.out;
  }
  // Greedy is deterministic: a second run gives the same tokens.
  auto r2 = lsbtest::run_lsb("run " + tiny_model().string() + " -n 8 --temp 0 -p 'The river' --json");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(nlohmann::json::parse(r2.out).at("tokens"), j.at("tokens"));
}

TEST(SynthModel, TokenizerIsLlamaLike) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load((tiny_model() / "tokenizer.model").string()).ok());
  EXPECT_LE(sp.GetPieceSize(), lsb::synth_shape("tiny").config.vocab_size);
  EXPECT_GT(sp.GetPieceSize(), 1000);  // a real BPE vocabulary, not just bytes
  EXPECT_EQ(sp.IdToPiece(0), "<unk>");
  EXPECT_EQ(sp.IdToPiece(1), "<s>");
  EXPECT_EQ(sp.IdToPiece(2), "</s>");
  EXPECT_EQ(sp.pad_id(), -1);
  EXPECT_GE(sp.PieceToId("<0x41>"), 3);  // byte fallback pieces
  // Any text round-trips, unseen characters through byte fallback.
  const std::string text = "The quick river walked home, 42 times! \xc3\xa9t\xc3\xa9 \xe2\x82\xac";
  std::vector<int> ids;
  ASSERT_TRUE(sp.Encode(text, &ids).ok());
  std::string back;
  ASSERT_TRUE(sp.Decode(ids, &back).ok());
  EXPECT_EQ(back, text);
  std::vector<std::string> pieces;
  ASSERT_TRUE(sp.Encode("the people", &pieces).ok());
  EXPECT_LE(pieces.size(), 3u) << "common words should be whole pieces";
  // Deterministic: training again gives the same bytes.
  EXPECT_EQ(lsb::synth_tokenizer_model(2048), slurp(tiny_model() / "tokenizer.model"));
}

TEST(SynthModel, SameSeedSameBytesOtherSeedDiffers) {
  const fs::path a = lsbtest::temp_dir() / "a", b = lsbtest::temp_dir() / "b", c = lsbtest::temp_dir() / "c";
  lsb::synth_model(a.string(), "tiny", quiet_options(7));
  lsb::SynthOptions other_chunks = quiet_options(7);
  other_chunks.chunk_bytes = 100'000;  // other chunking (rows split differently) must not change the bytes
  lsb::synth_model(b.string(), "tiny", other_chunks);
  lsb::synth_model(c.string(), "tiny", quiet_options(8));
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(a)) names.insert(e.path().filename().string());
  EXPECT_EQ(names.size(), 4u);
  for (const std::string& n : names) EXPECT_TRUE(slurp(a / n) == slurp(b / n)) << n << " differs for the same seed";
  const std::string shard = "model-00001-of-00001.safetensors";
  EXPECT_FALSE(slurp(a / shard) == slurp(c / shard)) << "seed 8 gave the same weights as seed 7";
  EXPECT_EQ(slurp(a / shard).size(), slurp(c / shard).size());
}

TEST(SynthModel, WeightStatisticsLookTrained) {
  auto src = lsb::open_model(tiny_model().string());
  const lsb::ModelConfig& cfg = src->config();
  for (const char* proj : {"self_attn.q_proj", "mlp.gate_proj"}) {
    const std::string name = std::string("model.layers.1.") + proj + ".weight";
    const std::vector<float> w = tensor_as_floats(*src, name);
    const lsb::TensorInfo& t = src->get(name);
    const int64_t rows = t.rows(), cols = t.cols();
    // Heavy tails: kurtosis well above a Gaussian's 3.
    double mean = 0;
    for (float v : w) mean += v;
    mean /= double(w.size());
    double m2 = 0, m4 = 0;
    for (float v : w) {
      const double d = v - mean, d2 = d * d;
      m2 += d2;
      m4 += d2 * d2;
    }
    m2 /= double(w.size());
    m4 /= double(w.size());
    EXPECT_GT(m4 / (m2 * m2), 4.0) << name;
    EXPECT_LT(std::fabs(mean), 0.05 * std::sqrt(m2)) << name;
    // Outlier input channels: a few columns with much larger norm than the median column.
    std::vector<double> col(size_t(cols), 0.0), row(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double v = w[size_t(r * cols + c)];
        col[size_t(c)] += v * v;
        row[size_t(r)] += v * v;
      }
    const double med = median(col);
    const auto n_big = std::count_if(col.begin(), col.end(), [&](double v) { return std::sqrt(v / med) > 4.0; });
    EXPECT_GE(n_big, 2) << name;
    EXPECT_LE(n_big, cols / 32) << name;
    // Per-row scales vary: the 90th percentile row norm well above the 10th.
    std::sort(row.begin(), row.end());
    EXPECT_GT(std::sqrt(row[size_t(rows * 9 / 10)] / row[size_t(rows / 10)]), 1.3) << name;
  }
  // The same channels are outliers in every layer, as in real models.
  auto outlier_cols = [&](const std::string& name) {
    const std::vector<float> w = tensor_as_floats(*src, name);
    const int64_t cols = src->get(name).cols();
    std::vector<double> col(size_t(cols), 0.0);
    for (size_t i = 0; i < w.size(); ++i) col[i % size_t(cols)] += double(w[i]) * w[i];
    const double med = median(col);
    std::set<int64_t> out;
    for (int64_t c = 0; c < cols; ++c)
      if (std::sqrt(col[size_t(c)] / med) > 4.0) out.insert(c);
    return out;
  };
  const std::set<int64_t> first = outlier_cols("model.layers.0.mlp.up_proj.weight");
  EXPECT_GE(first.size(), 3u);
  EXPECT_EQ(outlier_cols("model.layers.3.self_attn.k_proj.weight"), first);
  EXPECT_TRUE(outlier_cols("model.layers.2.self_attn.o_proj.weight").empty()) << "o_proj reads no residual stream";
  // Norm weights near 1.
  const std::vector<float> norm = tensor_as_floats(*src, "model.layers.2.input_layernorm.weight");
  double nm = 0;
  for (float v : norm) {
    EXPECT_GT(v, 0.0f);
    nm += v;
  }
  EXPECT_NEAR(nm / double(norm.size()), 1.0, 0.02);
  EXPECT_NE(*std::min_element(norm.begin(), norm.end()), *std::max_element(norm.begin(), norm.end()));
  // Embedding rows: moderate scale, no outlier columns.
  const std::vector<float> emb = tensor_as_floats(*src, "model.embed_tokens.weight");
  double e2 = 0;
  for (float v : emb) e2 += double(v) * v;
  const double emb_std = std::sqrt(e2 / double(emb.size()));
  EXPECT_GT(emb_std, 0.2 / std::sqrt(double(cfg.dim)));
  EXPECT_LT(emb_std, 5.0 / std::sqrt(double(cfg.dim)));
}

TEST(SynthModel, ShardsWithValidIndex) {
  const fs::path dir = lsbtest::temp_dir() / "sharded";
  lsb::SynthOptions o = quiet_options(1);
  o.max_shard_bytes = 1'000'000;  // the tiny model is 8 MB
  const lsb::SynthResult res = lsb::synth_model(dir.string(), "tiny", o);
  EXPECT_GE(res.n_shards, 5);
  const nlohmann::json index = nlohmann::json::parse(slurp(dir / "model.safetensors.index.json"));
  const auto& wm = index.at("weight_map");
  const auto expected = lsb::expected_tensors(lsb::synth_shape("tiny").config);
  EXPECT_EQ(wm.size(), expected.size());
  uint64_t total = 0;
  std::string prev_shard;
  int shard_no = 0;
  for (const auto& e : expected) {
    ASSERT_TRUE(wm.contains(e.name)) << e.name;
    const std::string shard = wm.at(e.name);
    if (shard != prev_shard) {  // HF order: shards hold consecutive runs of tensors
      ++shard_no;
      EXPECT_EQ(shard, fmt::format("model-{:05}-of-{:05}.safetensors", shard_no, res.n_shards));
      prev_shard = shard;
    }
    lsb::SafetensorsFile f((dir / shard).string());
    const lsb::TensorInfo* t = f.find(e.name);
    ASSERT_NE(t, nullptr) << e.name << " not in " << shard;
    total += t->nbytes;
  }
  EXPECT_EQ(shard_no, res.n_shards);
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), total);
  for (int i = 1; i <= res.n_shards; ++i) {
    lsb::SafetensorsFile f((dir / fmt::format("model-{:05}-of-{:05}.safetensors", i, res.n_shards)).string());
    uint64_t bytes = 0;
    for (const auto& t : f.tensors()) bytes += t.nbytes;
    if (f.tensors().size() > 1) {
      EXPECT_LE(bytes, o.max_shard_bytes) << f.path();
    }
  }
  // Sharding changes the files, not the weights: same tensors as the unsharded model of that seed.
  const fs::path one = lsbtest::temp_dir() / "one";
  lsb::synth_model(one.string(), "tiny", quiet_options(1));
  auto a = lsb::open_model(dir.string()), b = lsb::open_model(one.string());
  EXPECT_NO_THROW(lsb::validate_tensors(*a));
  for (const auto& e : expected) {
    auto da = a->data(a->get(e.name)), db = b->data(b->get(e.name));
    ASSERT_EQ(da.size(), db.size());
    EXPECT_EQ(std::memcmp(da.data(), db.data(), da.size()), 0) << e.name;
  }
}

TEST(SynthModel, StreamsWithSmallMemory) {
  // f32 "small" is 112 MB of weights; generation must not hold the model in memory.
  const fs::path dir = lsbtest::temp_dir() / "small";
  auto r = lsbtest::run_lsb("synth --shape small --dtype f32 --seed 3 -o " + dir.string() + " --json", 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("synthetic"), true);
  const double model_mb = j.at("tensor_bytes").get<double>() / 1e6;
  EXPECT_GT(model_mb, 100.0);
  EXPECT_LT(j.at("peak_rss_mb").get<double>(), model_mb / 2) << "peak RSS not well below the model size";
  auto src = lsb::open_model(dir.string());
  EXPECT_EQ(src->get("lm_head.weight").dtype, lsb::DType::F32);
  EXPECT_NO_THROW(lsb::validate_tensors(*src));
}

TEST(SynthModel, RefusesToOverwrite) {
  const fs::path parent = lsbtest::temp_dir();
  const fs::path dir = parent / "existing";
  fs::create_directories(dir);
  { std::ofstream(dir / "keep.txt") << "precious"; }
  try {
    lsb::synth_model(dir.string(), "tiny", quiet_options());
    FAIL() << "overwrote a non-empty folder";
  } catch (const lsb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(dir / "keep.txt"), "precious");
  auto r = lsbtest::run_lsb("synth --shape tiny -o " + dir.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not empty"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(dir / "keep.txt"), "precious");
  // An existing empty folder is fine; --force replaces a non-empty one.
  const fs::path empty = parent / "empty";
  fs::create_directories(empty);
  EXPECT_NO_THROW(lsb::synth_model(empty.string(), "tiny", quiet_options()));
  r = lsbtest::run_lsb("synth --shape tiny --force -o " + dir.string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dir / "keep.txt"));
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  // No temporary folders left beside the output.
  for (const auto& e : fs::directory_iterator(parent))
    EXPECT_EQ(e.path().filename().string().find("lsb-synth-tmp"), std::string::npos) << e.path();
}

TEST(SynthWriter, StreamedPiecesReadBack) {
  const fs::path p = lsbtest::temp_dir() / "w.safetensors";
  const std::vector<lsb::SafetensorsEntry> entries = {
      {"a", lsb::DType::F32, {3, 5}}, {"b", lsb::DType::BF16, {7}}, {"empty", lsb::DType::F16, {0, 4}}, {"c", lsb::DType::F16, {2, 3}}};
  std::string data(3 * 5 * 4 + 7 * 2 + 2 * 3 * 2, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 37 + 11);
  {
    lsb::SafetensorsWriter w(p.string(), entries);
    EXPECT_EQ(w.header_bytes() % 8, 0u);
    // Pieces of odd sizes that straddle tensor boundaries.
    size_t pos = 0;
    for (size_t step : {1u, 13u, 50u, 9u}) {
      const size_t n = std::min(step, data.size() - pos);
      w.append(std::as_bytes(std::span(data.data() + pos, n)));
      pos += n;
    }
    w.append(std::as_bytes(std::span(data.data() + pos, data.size() - pos)));
    EXPECT_EQ(w.current(), entries.size());
    EXPECT_THROW(w.append(std::as_bytes(std::span(data.data(), 1))), lsb::Error);
    w.finish();
    EXPECT_EQ(fs::file_size(p), w.total_bytes());
  }
  lsb::SafetensorsFile f(p.string());
  ASSERT_EQ(f.tensors().size(), entries.size());
  size_t off = 0;
  for (const auto& e : entries) {
    const lsb::TensorInfo* t = f.find(e.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, e.shape);
    EXPECT_EQ(t->dtype, e.dtype);
    auto d = f.data(e.name);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.data()), d.size()), data.substr(off, d.size())) << e.name;
    off += d.size();
  }
  // The header carries transformers' format tag.
  const std::string file = slurp(p);
  EXPECT_NE(file.find("\"format\":\"pt\""), std::string::npos);
}

TEST(SynthWriter, RejectsMisuse) {
  const fs::path p = lsbtest::temp_dir() / "bad.safetensors";
  const std::vector<float> four(4, 1.0f);
  {
    lsb::SafetensorsWriter w(p.string(), {{"x", lsb::DType::F32, {4}}, {"y", lsb::DType::F32, {2}}});
    EXPECT_THROW(w.write_tensor("y", std::as_bytes(std::span(four))), lsb::Error);                 // out of order
    EXPECT_THROW(w.write_tensor("x", std::as_bytes(std::span(four.data(), 3))), lsb::Error);       // wrong size
    w.write_tensor("x", std::as_bytes(std::span(four)));
    EXPECT_THROW(w.finish(), lsb::Error);  // y missing
  }
  EXPECT_THROW(lsb::SafetensorsFile{p.string()}, lsb::Error);  // the short file is refused by the reader
  EXPECT_THROW(lsb::SafetensorsWriter(p.string(), {{"x", lsb::DType::F32, {1}}, {"x", lsb::DType::F32, {1}}}), lsb::Error);
  EXPECT_THROW(lsb::SafetensorsWriter(p.string(), {{"q", lsb::DType::Q8, {1}}}), lsb::Error);
  EXPECT_THROW(lsb::SafetensorsWriter(p.string(), {{"huge", lsb::DType::F32, {1ll << 40, 1ll << 40}}}), lsb::Error);
  EXPECT_THROW(lsb::SafetensorsWriter((lsbtest::temp_dir() / "no" / "such" / "dir.st").string(), {}), lsb::Error);
}

// Random weights sample lone byte pieces (<0x80>..<0xFF>), so the generated text is not UTF-8:
// --json still prints one JSON document (those bytes become U+FFFD) instead of failing.
TEST(SynthModel, RunJsonSurvivesTextThatIsNotUtf8) {
  auto r = lsbtest::run_lsb("run " + tiny_model().string() + " -p 'Once' -n 96 --temp 1.0 --seed 2 --json -t 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("tokens").size(), 96u);
  EXPECT_NE(j.at("text").get<std::string>().find("\xEF\xBF\xBD"), std::string::npos)
      << "no replaced byte: the test no longer exercises the case";
}
