// GGUF input: bookworm-27m converted to llama.cpp's layout (llama.cpp names, q/k permuted to the
// interleaved RoPE order, SentencePiece vocabulary as tokens/scores/types) by the test writer,
// then read back and run against the Hugging Face folder it came from.
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "lib/gguf_writer.h"
#include "base/error.h"
#include "model/llama_model.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "runtime/threads.h"
#include "test_util.h"

namespace {

std::string bookworm() { return LSB_SHARED("models/bookworm-27m"); }

nlohmann::json reference() {
  std::ifstream f(LSB_SHARED("models/bookworm-27m/reference.json"));
  return nlohmann::json::parse(f);
}

// One GGUF per matrix type, written once per test binary run.
std::string gguf_of(uint32_t type) {
  static std::map<uint32_t, std::string> files;
  auto it = files.find(type);
  if (it != files.end()) return it->second;
  auto src = lsb::open_model(bookworm());
  const std::string path = (lsbtest::temp_dir() / ("bookworm-" + lsb::ggml_type_name(type) + ".gguf")).string();
  lsb::write_gguf_from_source(*src, src->tokenizer(), path, type);
  return files[type] = path;
}

// Logits of every position of reference.json's tokens.
std::vector<float> logits_of(const std::string& model_path, int& vocab) {
  lsb::set_threads(2);
  lsb::Session session = lsbtest::session_on(model_path);
  lsb::LlamaModel* model = session.model.get();
  const std::vector<int> tokens = reference()["tokens"].get<std::vector<int>>();
  const int n = static_cast<int>(tokens.size()) - 1;
  vocab = model->config().vocab_size;
  model->reset(n);
  std::vector<float> logits(static_cast<size_t>(n) * vocab);
  model->forward(tokens.data(), n, 0, logits.data(), 0);
  return logits;
}

const std::vector<float>& hf_logits(int& vocab) {
  static int v = 0;
  static const std::vector<float> l = logits_of(bookworm(), v);
  vocab = v;
  return l;
}

struct Diff {
  double max_abs = 0;
  int top1_same = 0, positions = 0;
};

Diff compare_to_hf(const std::string& gguf) {
  int vocab = 0, vocab2 = 0;
  const std::vector<float>& want = hf_logits(vocab);
  const std::vector<float> got = logits_of(gguf, vocab2);
  EXPECT_EQ(vocab, vocab2);
  EXPECT_EQ(got.size(), want.size());
  Diff d;
  d.positions = static_cast<int>(want.size() / size_t(vocab));
  for (int p = 0; p < d.positions; ++p) {
    const float* a = want.data() + size_t(p) * vocab;
    const float* b = got.data() + size_t(p) * vocab;
    d.top1_same += lsb::argmax(a, vocab) == lsb::argmax(b, vocab);
    for (int i = 0; i < vocab; ++i) d.max_abs = std::max(d.max_abs, double(std::fabs(a[i] - b[i])));
  }
  return d;
}

}  // namespace

TEST(GgufRead, ConfigNamesAndLayoutOfConvertedBookworm) {
  const std::string path = gguf_of(lsb::kGgmlBF16);
  lsb::GgufSource g(path);
  auto hf = lsb::open_model(bookworm());
  const lsb::ModelConfig& a = hf->config();
  const lsb::ModelConfig& b = g.config();
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(b.dim, a.dim);
  EXPECT_EQ(b.hidden_dim, a.hidden_dim);
  EXPECT_EQ(b.n_layers, a.n_layers);
  EXPECT_EQ(b.n_heads, a.n_heads);
  EXPECT_EQ(b.n_kv_heads, a.n_kv_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.tie_embeddings, a.tie_embeddings);
  EXPECT_FLOAT_EQ(b.norm_eps, a.norm_eps);
  EXPECT_FLOAT_EQ(b.rope_theta, a.rope_theta);
  EXPECT_TRUE(b.rope_interleaved);
  EXPECT_FALSE(a.rope_interleaved);
  // Same canonical tensors with the same shapes; v (not permuted) byte-identical to the HF shard.
  ASSERT_EQ(g.tensors().size(), hf->tensors().size());
  for (const lsb::TensorInfo& t : hf->tensors()) {
    const lsb::TensorInfo* u = g.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->shape, t.shape) << t.name;
  }
  EXPECT_EQ(g.gguf_names().front(), "token_embd.weight");
  const auto& v_hf = hf->get("model.layers.2.self_attn.v_proj.weight");
  const auto& v_g = g.get("model.layers.2.self_attn.v_proj.weight");
  auto x = hf->data(v_hf), y = g.data(v_g);
  ASSERT_EQ(x.size(), y.size());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0);
  // q is permuted: row 1 of head 0 in GGUF is row head_dim/2 of the HF matrix.
  const auto& q_hf = hf->get("model.layers.0.self_attn.q_proj.weight");
  auto qh = hf->data(q_hf), qg = g.data(g.get(q_hf.name));
  const size_t row = size_t(q_hf.cols()) * 2;
  EXPECT_EQ(std::memcmp(qg.data() + row, qh.data() + row * size_t(a.head_dim / 2), row), 0);
  EXPECT_NE(std::memcmp(qg.data() + row, qh.data() + row, row), 0);
}

// Must show: bf16 GGUF logits equal the HF folder's (same bf16 numbers, other RoPE layout).
TEST(GgufLogits, Bf16MatchesHfFolder) {
  const Diff d = compare_to_hf(gguf_of(lsb::kGgmlBF16));
  std::printf("bf16 GGUF vs HF: max |logit diff| %.3g, top-1 same %d/%d\n", d.max_abs, d.top1_same, d.positions);
  EXPECT_EQ(d.top1_same, d.positions);
  EXPECT_LT(d.max_abs, 1e-3);
}

TEST(GgufLogits, F32MatchesHfFolder) {
  const Diff d = compare_to_hf(gguf_of(lsb::kGgmlF32));
  std::printf("f32 GGUF vs HF: max |logit diff| %.3g, top-1 same %d/%d\n", d.max_abs, d.top1_same, d.positions);
  EXPECT_EQ(d.top1_same, d.positions);
  EXPECT_LT(d.max_abs, 1e-3);
}

TEST(GgufLogits, F16MatchesHfFolder) {
  // bf16 -> f16 is exact except for values below f16's normal range, which lose low bits.
  const Diff d = compare_to_hf(gguf_of(lsb::kGgmlF16));
  std::printf("f16 GGUF vs HF: max |logit diff| %.3g, top-1 same %d/%d\n", d.max_abs, d.top1_same, d.positions);
  EXPECT_EQ(d.top1_same, d.positions);
  EXPECT_LT(d.max_abs, 1e-2);
}

TEST(GgufLogits, Q8_0IsClose) {
  const Diff d = compare_to_hf(gguf_of(lsb::kGgmlQ8_0));
  std::printf("Q8_0 GGUF vs HF: max |logit diff| %.3g, top-1 same %d/%d\n", d.max_abs, d.top1_same, d.positions);
  EXPECT_GE(d.top1_same, d.positions * 9 / 10);
  EXPECT_LT(d.max_abs, 0.5);
  // And it really is quantized: not the bf16 logits.
  EXPECT_GT(d.max_abs, 1e-4);
}

TEST(GgufRead, Q8_0DequantizesLikeLlamaCpp) {
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(float(i)) * (i < 32 ? 0.5f : 3.0f);
  const std::vector<std::byte> blocks = lsb::encode_ggml(v, lsb::kGgmlQ8_0, "test");
  ASSERT_EQ(blocks.size(), 2 * lsb::kGgmlQ8_0BlockBytes);
  std::vector<float> back(64);
  lsb::dequantize_q8_0(blocks, back.data(), "test");
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(back[i], v[i], (i < 32 ? 0.5 : 3.0) / 127.0 * 0.51 + 1e-3) << i;
}

// The GGUF vocabulary through the llama2.c merge algorithm gives SentencePiece's ids.
TEST(GgufTokenizer, EncodesLikeSentencePieceOnBookwormValid) {
  lsb::GgufSource g(gguf_of(lsb::kGgmlBF16));
  const lsb::TokenizerBlob blob = g.tokenizer();
  ASSERT_EQ(blob.kind, lsb::TokenizerBlob::Kind::Llama2c);
  auto gguf_tok = lsb::load_tokenizer(blob);
  auto spm = lsb::load_tokenizer(lsb::read_tokenizer_file(LSB_SHARED("models/bookworm-27m/tokenizer.model")));
  EXPECT_EQ(gguf_tok->vocab_size(), spm->vocab_size());
  std::ifstream f(LSB_SHARED("data/bookworm_valid.txt"), std::ios::binary);
  std::string text(10240, '\0');
  f.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(f.gcount()));
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();  // whole chars
  if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  ASSERT_GT(text.size(), 10000u);
  const std::vector<int> want = spm->encode(text, true);
  const std::vector<int> got = gguf_tok->encode(text, true);
  EXPECT_EQ(got, want);
  EXPECT_GT(want.size(), 1000u);
  EXPECT_EQ(gguf_tok->decode(got), spm->decode(want));
  // Paragraph by paragraph too (documents are encoded one at a time by the reference perplexity).
  size_t start = 0, n_docs = 0;
  while (start < text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    const std::string doc = text.substr(start, end - start);
    EXPECT_EQ(gguf_tok->encode(doc, false), spm->encode(doc, false)) << doc.substr(0, 60);
    start = end + 2;
    ++n_docs;
  }
  EXPECT_GT(n_docs, 5u);
}

TEST(GgufCli, EvalEqualsHfFolder) {
  const std::string args = " --text " + LSB_SHARED("data/bookworm_valid.txt") + " --ctx 512 --chunks 2 --json -t 2";
  auto a = lsbtest::run_lsb("eval " + bookworm() + args, 300);
  auto b = lsbtest::run_lsb("eval " + gguf_of(lsb::kGgmlBF16) + args, 300);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(jb["n_tokens"], ja["n_tokens"]);
  EXPECT_EQ(jb["n_scored"], ja["n_scored"]);
  const double pa = ja["ppl"].get<double>(), pb = jb["ppl"].get<double>();
  std::printf("eval --chunks 2: HF folder PPL %.5f, GGUF bf16 PPL %.5f\n", pa, pb);
  EXPECT_NEAR(pb, pa, 1e-4 * pa);
}

TEST(GgufCli, RunAndCompressAcceptGguf) {
  const std::string gguf = gguf_of(lsb::kGgmlBF16);
  auto r = lsbtest::run_lsb("run " + gguf + " -p 'The King' -n 8 --temp 0 -t 2", 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto h = lsbtest::run_lsb("run " + bookworm() + " -p 'The King' -n 8 --temp 0 -t 2", 120);
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(r.out, h.out);  // greedy text identical
  const std::string out = (lsbtest::temp_dir() / "from_gguf.lsb").string();
  auto c = lsbtest::run_lsb("compress " + gguf + " -o " + out + " --scheme q8 -t 2", 300);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto e = lsbtest::run_lsb("run " + out + " -p 'The King' -n 4 --temp 0 -t 2", 120);
  EXPECT_EQ(e.exit_code, 0) << e.err;
}

// `lsb convert` (what bench/peer/ gives llama.cpp) writes the writer's bytes, and its options.
TEST(GgufCli, ConvertWritesTheWritersBytes) {
  for (const char* type : {"f32", "bf16"}) {
    const std::string out = (lsbtest::temp_dir() / (std::string("convert-") + type + ".gguf")).string();
    auto r = lsbtest::run_lsb("convert " + bookworm() + " --to gguf --type " + type + " -o " + out + " --json", 120);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["params"].get<uint64_t>(), 27269632u);
    EXPECT_TRUE(j["vocabulary"].get<bool>());
    const std::string ref = gguf_of(std::string(type) == "f32" ? lsb::kGgmlF32 : lsb::kGgmlBF16);
    std::ifstream a(out, std::ios::binary), b(ref, std::ios::binary);
    const std::string ba((std::istreambuf_iterator<char>(a)), {}), bb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(ba.size(), bb.size());
    EXPECT_TRUE(ba == bb) << type << ": lsb convert differs from write_gguf_from_source";
  }
  auto bad = lsbtest::run_lsb("convert " + bookworm() + " --to safetensors -o x", 30);
  EXPECT_NE(bad.exit_code, 0);
}

TEST(GgufErrors, UnsupportedTypeNamesTensorAndType) {
  lsb::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_tensor("token_embd.weight", lsb::kGgmlF32, {32, 16}, std::vector<std::byte>(32 * 16 * 4));
  w.add_tensor("blk.0.attn_q.weight", 12 /* Q4_K */, {256, 32}, std::vector<std::byte>(144 * 32));
  const std::string path = (lsbtest::temp_dir() / "q4k.gguf").string();
  w.write(path);
  auto r = lsbtest::run_lsb("run " + path + " -p x -n 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(path + ": tensor 'blk.0.attn_q.weight' has type Q4_K, which lsb does not read "
                              "(supported: F32, F16, BF16, Q8_0)"),
            std::string::npos)
      << r.err;
}

TEST(GgufErrors, OtherArchitectureIsRefused) {
  lsb::GgufWriter w;
  w.add_string("general.architecture", "gpt2");
  const std::string path = (lsbtest::temp_dir() / "gpt2.gguf").string();
  w.write(path);
  try {
    lsb::GgufSource g(path);
    FAIL() << "opened a gpt2 GGUF";
  } catch (const lsb::Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": general.architecture is 'gpt2'; lsb reads only 'llama' GGUF models");
  }
}

TEST(GgufRead, NameMapping) {
  EXPECT_EQ(lsb::gguf_to_hf_name("blk.12.ffn_down.weight"), "model.layers.12.mlp.down_proj.weight");
  EXPECT_EQ(lsb::gguf_to_hf_name("blk.0.attn_output.weight"), "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(lsb::gguf_to_hf_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(lsb::gguf_to_hf_name("blk.01.attn_q.weight"), "blk.01.attn_q.weight");  // no second spelling
  EXPECT_EQ(lsb::gguf_to_hf_name("blk..attn_q.weight"), "blk..attn_q.weight");
  EXPECT_EQ(lsb::gguf_to_hf_name("rope_freqs.weight"), "rope_freqs.weight");
}
