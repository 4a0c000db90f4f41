// The .lsb container: the writer against the byte offsets of docs/FORMAT.md (read by hand),
// the reader's validation of every kind of damage, lazy tensor checksums, and lossless dense
// passthrough through `lsb run` / `lsb eval`.
#include <xxhash.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "format/lsb_reader.h"
#include "format/lsb_writer.h"
#include "pipeline/compress.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}
// Little-endian fields read by hand at the offsets the spec gives.
uint64_t rd(const std::string& b, size_t off, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(b.at(off + i))) << (8 * i);
  return v;
}
void wr(std::string& b, size_t off, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.at(off + i) = static_cast<char>((v >> (8 * i)) & 0xff);
}
// header_checksum as docs/FORMAT.md defines it: header [0, 120), then metadata, tokenizer,
// string table, directory.
uint64_t spec_header_checksum(const std::string& b) {
  std::string s = b.substr(0, 120);
  for (size_t f : {24, 40, 64, 80})
    if (rd(b, f, 8) <= b.size()) s += b.substr(rd(b, f, 8), rd(b, f + 8, 8));  // damaged files: whatever is there
  return XXH3_64bits(s.data(), s.size());
}
void fix_checksum(std::string& b) { wr(b, 120, spec_header_checksum(b), 8); }

std::string stories() { return LSB_SHARED("models/stories260K/stories260K.bin"); }
std::string tok512() { return LSB_SHARED("models/stories260K/tok512.bin"); }

// stories260K compressed once per scheme, reused by the tests of this file.
fs::path stories_lsb(const std::string& scheme) {
  static std::map<std::string, fs::path> made;
  auto it = made.find(scheme);
  if (it != made.end()) return it->second;
  fs::path out = lsbtest::temp_dir() / ("stories_" + scheme + ".lsb");
  lsb::CompressOptions o;
  o.scheme = scheme;
  o.tokenizer_path = tok512();
  lsb::compress_model(stories(), out.string(), o);
  made[scheme] = out;
  return out;
}

// Writes bytes to a fresh file and returns the error message of opening it (empty if none).
std::string open_error(const std::string& bytes, const std::string& name = "x.lsb") {
  fs::path p = lsbtest::temp_dir() / name;
  spit(p, bytes);
  try {
    lsb::format::LsbReader r(p.string());
    return "";
  } catch (const lsb::Error& e) {
    return e.what();
  }
}

struct Entry {
  std::string name;
  size_t at;  // byte offset of the entry in the file
};
std::vector<Entry> directory(const std::string& b) {
  std::vector<Entry> out;
  const uint64_t dir = rd(b, 80, 8), strings = rd(b, 64, 8);
  for (uint64_t i = 0; i < rd(b, 60, 4); ++i) {
    const size_t at = dir + i * 96;
    out.push_back({b.substr(strings + rd(b, at, 8), rd(b, at + 8, 4)), at});
  }
  return out;
}
size_t entry_at(const std::string& b, const std::string& name) {
  for (const Entry& e : directory(b))
    if (e.name == name) return e.at;
  ADD_FAILURE() << "no tensor " << name;
  return 0;
}

}  // namespace

TEST(FormatSpec, HeaderFieldsAtDocumentedOffsets) {
  const fs::path p = stories_lsb("f32");
  const std::string b = slurp(p);
  ASSERT_GE(b.size(), 4096u);
  EXPECT_EQ(b.substr(0, 8), "LSBMODEL");
  EXPECT_EQ(rd(b, 8, 2), 2u);   // version_major
  EXPECT_EQ(rd(b, 10, 2), 0u);  // version_minor
  EXPECT_EQ(rd(b, 12, 4), 0u);  // flags
  EXPECT_EQ(rd(b, 16, 8), b.size());  // file_size
  EXPECT_EQ(rd(b, 112, 8), 0u);       // reserved
  EXPECT_EQ(rd(b, 120, 8), spec_header_checksum(b));
  const uint64_t data_off = rd(b, 96, 8), data_size = rd(b, 104, 8);
  EXPECT_EQ(data_off, 4096u);
  // Small sections come after the data, each 64-aligned, inside the file.
  for (size_t f : {24, 40, 64, 80}) {
    EXPECT_EQ(rd(b, f, 8) % 64, 0u) << f;
    EXPECT_GE(rd(b, f, 8), data_off + data_size) << f;
    EXPECT_LE(rd(b, f, 8) + rd(b, f + 8, 8), b.size()) << f;
  }
  // Metadata is the JSON the spec describes.
  const auto meta = nlohmann::json::parse(b.substr(rd(b, 24, 8), rd(b, 32, 8)));
  EXPECT_EQ(meta.at("format"), "lsb");
  EXPECT_EQ(meta.at("config").at("dim"), 64);
  EXPECT_EQ(meta.at("provenance").at("source"), stories());
  EXPECT_EQ(meta.at("provenance").at("source_xxh3").get<std::string>().size(), 16u);
  EXPECT_EQ(meta.at("layers").size(), 5u);
  // Tokenizer: kind 2 (llama2.c), bytes identical to tok512.bin.
  EXPECT_EQ(rd(b, 56, 4), 2u);
  EXPECT_EQ(b.substr(rd(b, 40, 8), rd(b, 48, 8)), slurp(tok512()));
  // Directory: 47 tensors of stories260K (tied head), 96-byte entries.
  const uint64_t count = rd(b, 60, 4);
  EXPECT_EQ(count, 47u);
  EXPECT_EQ(rd(b, 88, 8), count * 96);
  const std::vector<Entry> dir = directory(b);
  EXPECT_EQ(dir.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(dir[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(dir.back().name, "model.norm.weight");

  // Source floats, to check that dense passthrough stores exactly the source bytes.
  const std::string src = slurp(stories());
  const uint64_t emb = entry_at(b, "model.embed_tokens.weight");
  EXPECT_EQ(rd(b, emb + 12, 1), 0u);  // dtype F32
  EXPECT_EQ(rd(b, emb + 13, 1), 2u);  // ndim
  EXPECT_EQ(rd(b, emb + 16, 8), 512u);
  EXPECT_EQ(rd(b, emb + 24, 8), 64u);
  EXPECT_EQ(rd(b, emb + 32, 8), 0u);
  EXPECT_EQ(static_cast<int32_t>(rd(b, emb + 56, 4)), -1);  // layer
  EXPECT_EQ(rd(b, emb + 72, 8), 512u * 64 * 4);
  EXPECT_EQ(b.substr(rd(b, emb + 64, 8), 512 * 64 * 4), src.substr(28, 512 * 64 * 4));  // after the 7-int header

  int last_layer = -2;
  uint64_t prev_end = 0;
  for (const Entry& e : dir) {
    const uint64_t off = rd(b, e.at + 64, 8), size = rd(b, e.at + 72, 8);
    const int layer = static_cast<int32_t>(rd(b, e.at + 56, 4));
    EXPECT_EQ(off % 64, 0u) << e.name;
    EXPECT_GE(off, prev_end) << e.name;  // directory order is data order, no overlap
    EXPECT_LE(off + size, data_off + data_size) << e.name;
    EXPECT_EQ(rd(b, e.at + 80, 8), XXH3_64bits(b.data() + off, size)) << e.name;
    if (layer != last_layer) {
      EXPECT_EQ(off % 4096, 0u) << "layer region of " << e.name << " not page-aligned";
    }
    if (e.name.rfind("model.layers.", 0) == 0) {
      EXPECT_EQ(layer, std::stoi(e.name.substr(13))) << e.name;
    }
    last_layer = layer;
    prev_end = off + size;
  }
  // Layer ranges in the metadata are the page-aligned spans of each layer's tensors.
  for (const auto& l : meta.at("layers")) {
    EXPECT_EQ(l.at("offset").get<uint64_t>() % 4096, 0u);
    const std::string first = "model.layers." + std::to_string(l.at("layer").get<int>()) + ".input_layernorm.weight";
    EXPECT_EQ(rd(b, entry_at(b, first) + 64, 8), l.at("offset").get<uint64_t>());
  }
}

TEST(FormatSpec, QuantizedEntriesCarryTheirParameters) {
  const std::string b = slurp(stories_lsb("lsb1"));
  const size_t e = entry_at(b, "model.layers.2.mlp.up_proj.weight");
  const uint64_t strings = rd(b, 64, 8);
  EXPECT_EQ(rd(b, e + 12, 1), 17u);  // LSB1
  EXPECT_EQ(rd(b, e + 14, 2), 0u);   // flags
  EXPECT_EQ(rd(b, e + 52, 4), 0u);   // reserved
  EXPECT_EQ(rd(b, e + 60, 4), 0u);   // reserved
  // The parameters: canonical JSON text in the string table (params_offset at 88, size at 48).
  const std::string params = b.substr(strings + rd(b, e + 88, 8), rd(b, e + 48, 4));
  EXPECT_EQ(params, "{\"alpha\":0.019999999552965164,\"group\":128,\"mean\":false}");
  EXPECT_EQ(static_cast<int32_t>(rd(b, e + 56, 4)), 2);
  // Norms stay F32 whatever the scheme, without parameters.
  const size_t n = entry_at(b, "model.layers.2.input_layernorm.weight");
  EXPECT_EQ(rd(b, n + 12, 1), 0u);
  EXPECT_EQ(rd(b, n + 48, 4), 0u);
}

// Version 1 files (fixed LSB1/PAPER parameter fields) still load: tests/data/stories260K_v1.lsb
// was written by lsb 0.1.0 from stories260K with lsb1 (G 32, alpha 0.05, means) and paper, q8
// and bf16 tensors. The same compression made today (version 2) holds the same bytes for every
// tensor and gives the same logits bit for bit.
TEST(FormatReader, VersionOneFilesStillLoad) {
  const std::string v1 = std::string(LSB_SOURCE_DIR) + "/tests/data/stories260K_v1.lsb";
  lsb::format::LsbReader old_file(v1);
  EXPECT_EQ(old_file.header().version_major, 1);
  const fs::path v2 = lsbtest::temp_dir() / "stories_v2.lsb";
  lsb::CompressOptions o;
  o.scheme = "lsb1";
  o.options.group_size = 32;
  o.options.outlier_ratio = 0.05f;
  o.options.use_mean = true;
  o.keep = {"model.layers.0.mlp.*=paper", "model.layers.1.self_attn.?_proj.weight=q8", "model.layers.2.*=bf16"};
  o.tokenizer_path = tok512();
  lsb::compress_model(stories(), v2.string(), o);
  lsb::format::LsbReader new_file(v2.string());
  EXPECT_EQ(new_file.header().version_major, 2);
  ASSERT_EQ(old_file.tensors().size(), new_file.tensors().size());
  std::set<lsb::DType> seen;
  for (const lsb::TensorInfo& t : new_file.tensors()) {
    const lsb::TensorInfo& u = old_file.get(t.name);
    EXPECT_EQ(u.dtype, t.dtype) << t.name;
    EXPECT_EQ(u.params, t.params) << t.name;
    const auto a = old_file.data(u), c = new_file.data(t);
    ASSERT_EQ(a.size(), c.size()) << t.name;
    EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size()), 0) << t.name;
    seen.insert(t.dtype);
  }
  using lsb::DType;
  EXPECT_EQ(seen, (std::set<DType>{DType::F32, DType::BF16, DType::Q8, DType::LSB1, DType::PAPER}));
  EXPECT_EQ(old_file.get("model.layers.3.mlp.up_proj.weight").params,
            "{\"alpha\":0.05000000074505806,\"group\":32,\"mean\":true}");
  lsb::Session s1 = lsbtest::session_on(v1), s2 = lsbtest::session_on(v2.string());
  const std::vector<int> toks = {1, 403, 407, 261, 378, 31, 8, 57};
  std::vector<float> l1(toks.size() * 512), l2(l1.size());
  s1.model->reset(16);
  s2.model->reset(16);
  s1.model->forward(toks.data(), static_cast<int>(toks.size()), 0, l1.data(), 0);
  s2.model->forward(toks.data(), static_cast<int>(toks.size()), 0, l2.data(), 0);
  EXPECT_EQ(std::memcmp(l1.data(), l2.data(), l1.size() * 4), 0);
}

TEST(FormatWriter, NonContiguousLayerIsRejectedAndTempRemoved) {
  const fs::path out = lsbtest::temp_dir() / "w.lsb";
  std::string temp;
  {
    lsb::format::LsbWriter w(out.string());
    temp = w.temp_path();
    EXPECT_TRUE(fs::exists(temp));
    std::vector<std::byte> d(16);
    lsb::TensorInfo t;
    t.shape = {4};
    t.name = "model.layers.0.a";
    w.add_tensor(t, 0, d);
    t.name = "model.layers.1.a";
    w.add_tensor(t, 1, d);
    t.name = "model.layers.0.b";
    EXPECT_THROW(w.add_tensor(t, 0, d), lsb::Error);
    t.name = "model.layers.1.a";
    EXPECT_THROW(w.add_tensor(t, 1, d), lsb::Error);  // duplicate name
  }
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_FALSE(fs::exists(out));
}

// planned_file_size is what the bit allocator plans with: it must give the writer's size exactly,
// whatever the mix of layers, sizes (aligned or not), names, parameters and sections.
TEST(FormatWriter, PlannedSizeIsTheWrittenSize) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 12; ++trial) {
    const fs::path out = lsbtest::temp_dir() / ("planned" + std::to_string(trial) + ".lsb");
    std::vector<lsb::format::PlannedTensor> plan;
    lsb::format::LsbWriter w(out.string());
    lsb::TokenizerBlob tok;
    if (trial % 3) {
      tok.kind = lsb::TokenizerBlob::Kind::SentencePiece;
      tok.bytes = std::string(rng() % 5000, 'x');
    }
    w.set_tokenizer(tok);
    int layer = -1, count = 0;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      if (rng() % 4 == 0) layer = layer + 1;  // layers in order, some with several tensors
      const int l = (i == n - 1 && trial % 2) ? -1 : layer;
      if (l == -1 && layer >= 0 && i != n - 1) continue;
      lsb::TensorInfo t;
      const uint64_t bytes = rng() % 3 == 0 ? 4096 * (1 + rng() % 3) : rng() % 20000;
      t.shape = {static_cast<int64_t>(bytes / 4 + 1)};
      t.name = "t" + std::to_string(count++) + std::string(rng() % 30, 'n');
      t.params = std::string(rng() % 3 == 0 ? 0 : rng() % 60, 'p');
      std::vector<std::byte> d(bytes);
      w.add_tensor(t, l, d);
      plan.push_back({l, bytes, t.name.size(), t.params.size()});
      if (l == -1 && i == n - 1) break;
    }
    const nlohmann::json meta = {{"format", "lsb"}, {"note", std::string(rng() % 9000, 'm')}};
    const uint64_t size = w.finish(meta);
    EXPECT_EQ(lsb::format::planned_file_size(plan, meta, tok.bytes.size()), size) << "trial " << trial;
    EXPECT_EQ(fs::file_size(out), size);
  }
}

TEST(FormatReader, RejectsWrongMagicAndTruncation) {
  const std::string good = slurp(stories_lsb("lsb1"));
  ASSERT_EQ(open_error(good), "");
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_NE(open_error(bad).find("not an .lsb file"), std::string::npos) << open_error(bad);
  // open_model sends a .lsb name with a wrong magic to the same message.
  fs::path p = lsbtest::temp_dir() / "bad.lsb";
  spit(p, bad);
  try {
    lsb::open_model(p.string());
    ADD_FAILURE() << "opened a file with a bad magic";
  } catch (const lsb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not an .lsb file"), std::string::npos) << e.what();
  }
  EXPECT_NE(open_error(""), "");
  for (size_t n : {size_t(4), size_t(8), size_t(100), size_t(128), size_t(4096), good.size() / 2, good.size() - 1}) {
    const std::string msg = open_error(good.substr(0, n));
    EXPECT_NE(msg, "") << "truncated to " << n;
  }
  EXPECT_NE(open_error(good.substr(0, good.size() - 1)).find("truncated"), std::string::npos);
}

TEST(FormatReader, RejectsFutureMajorVersion) {
  std::string b = slurp(stories_lsb("lsb1"));
  wr(b, 8, 3, 2);
  fs::path p = lsbtest::temp_dir() / "future.lsb";
  spit(p, b);
  try {
    lsb::format::LsbReader r(p.string());
    ADD_FAILURE() << "opened a version 3 file";
  } catch (const lsb::Error& e) {
    EXPECT_EQ(std::string(e.what()), p.string() + ": file format version 3.0 is newer than this lsb supports (2.x)");
  }
  // A newer minor version of the same major is accepted (once its checksum is right).
  b = slurp(stories_lsb("lsb1"));
  wr(b, 10, 7, 2);
  fix_checksum(b);
  EXPECT_EQ(open_error(b), "");
  // Unknown required flags are refused.
  wr(b, 12, 1, 4);
  fix_checksum(b);
  EXPECT_NE(open_error(b).find("flags"), std::string::npos);
}

TEST(FormatReader, RejectsHeaderChecksumMismatch) {
  const std::string good = slurp(stories_lsb("lsb1"));
  // One flipped byte in each checksummed region: header field, metadata, tokenizer, names, directory.
  for (size_t off : {size_t(100), size_t(rd(good, 24, 8) + 5), size_t(rd(good, 40, 8) + 7), size_t(rd(good, 64, 8) + 3),
                     size_t(rd(good, 80, 8) + 70)}) {
    std::string b = good;
    b[off] ^= 0x10;
    const std::string msg = open_error(b);
    EXPECT_NE(msg, "") << off;
    if (off != 100) {
      EXPECT_NE(msg.find("header checksum mismatch"), std::string::npos) << off << ": " << msg;
    }
  }
}

TEST(FormatReader, RejectsOffsetsPastEndOfFileAndOverlaps) {
  const std::string good = slurp(stories_lsb("lsb1"));
  auto with = [&](auto edit) {
    std::string b = good;
    edit(b);
    fix_checksum(b);
    return open_error(b);
  };
  // Sections past the end, including sizes that overflow offset + size.
  EXPECT_NE(with([&](std::string& b) { wr(b, 24, b.size() + 64, 8); }).find("past the end"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, 80, ~uint64_t(0) - 8, 8); }).find("past the end"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, 32, ~uint64_t(0), 8); }).find("past the end"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, 104, b.size(), 8); }), "");
  // Sections overlapping each other.
  EXPECT_NE(with([&](std::string& b) { wr(b, 64, rd(b, 24, 8), 8); }).find("overlaps"), std::string::npos);
  // A tensor's data past the end of the file / the data section.
  const size_t up = entry_at(good, "model.layers.3.mlp.up_proj.weight");
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 64, (b.size() / 64 + 64) * 64, 8); }).find("outside"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 72, ~uint64_t(0) - 63, 8); }).find("outside"), std::string::npos);
  // Two tensors of the same layer sharing bytes.
  const size_t n1 = entry_at(good, "model.layers.0.input_layernorm.weight");
  const size_t n2 = entry_at(good, "model.layers.0.post_attention_layernorm.weight");
  EXPECT_NE(with([&](std::string& b) { wr(b, n2 + 64, rd(b, n1 + 64, 8), 8); }).find("overlap"), std::string::npos);
  // Misaligned tensor data.
  EXPECT_NE(with([&](std::string& b) { wr(b, n2 + 64, rd(b, n2 + 64, 8) + 4, 8); }).find("multiple of 64"),
            std::string::npos);
  // Directory size that disagrees with the tensor count.
  EXPECT_NE(with([&](std::string& b) { wr(b, 60, rd(b, 60, 4) + 1, 4); }), "");
}

TEST(FormatReader, RejectsBadEntries) {
  const std::string good = slurp(stories_lsb("lsb1"));
  auto with = [&](auto edit) {
    std::string b = good;
    edit(b);
    fix_checksum(b);
    return open_error(b);
  };
  const size_t e0 = directory(good)[0].at, e1 = directory(good)[1].at;
  const size_t norm = entry_at(good, "model.layers.0.input_layernorm.weight");
  const size_t up = entry_at(good, "model.layers.3.mlp.up_proj.weight");
  // Duplicate name, name outside the string table, invalid UTF-8.
  EXPECT_NE(with([&](std::string& b) { wr(b, e1, rd(b, e0, 8), 8); wr(b, e1 + 8, rd(b, e0 + 8, 4), 4); }).find("twice"),
            std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, e1, rd(b, 72, 8), 8); }).find("string table"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { b[rd(b, 64, 8) + 2] = static_cast<char>(0xff); }).find("UTF-8"), std::string::npos);
  // Unknown dtype, bad ndim, zero dimension, dense size that disagrees with the shape.
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 12, 99, 1); }).find("unknown dtype"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 13, 5, 1); }).find("dimensions"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 16, 0, 8); }).find("dimension 0"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, norm + 16, 65, 8); }).find("needs"), std::string::npos);
  // Quantized blob smaller than its fixed sections; invalid parameters; layer out of range.
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 72, 64, 8); }).find("fixed"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 48, static_cast<uint32_t>(-5), 4); }), "");
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 56, 9, 4); }).find("layer"), std::string::npos);
  EXPECT_NE(with([&](std::string& b) { wr(b, up + 56, 1, 4); }).find("region of layer 1"), std::string::npos);
}

// A flipped byte inside a tensor: the header is intact, so the file opens, and the first access
// to the tensor names it. Both `inspect --verify` and `run` must say which tensor and exit non-zero.
TEST(FormatReader, TensorChecksumMismatchNamesTheTensor) {
  std::string b = slurp(stories_lsb("lsb1"));
  const std::string name = "model.layers.3.mlp.up_proj.weight";
  const size_t e = entry_at(b, name);
  b[rd(b, e + 64, 8) + rd(b, e + 72, 8) / 3] ^= 0x01;
  const fs::path p = lsbtest::temp_dir() / "flipped.lsb";
  spit(p, b);
  const std::string want = p.string() + ": checksum mismatch in tensor '" + name + "'";

  lsb::format::LsbReader r(p.string());
  EXPECT_NO_THROW(r.data(r.get("model.layers.3.mlp.down_proj.weight")));
  try {
    r.data(r.get(name));
    ADD_FAILURE() << "no checksum error";
  } catch (const lsb::Error& e) {
    EXPECT_EQ(std::string(e.what()), want);
  }
  lsbtest::RunResult v = lsbtest::run_lsb("inspect --verify " + p.string());
  EXPECT_EQ(v.exit_code, 1);
  EXPECT_NE(v.err.find(want), std::string::npos) << v.err;
  lsbtest::RunResult run = lsbtest::run_lsb("run " + p.string() + " -p 'Once upon a time' -n 8 --temp 0");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.err.find(want), std::string::npos) << run.err;
  // Streaming reads the unit itself (its own reads, not the map): the same message.
  lsbtest::RunResult streamed = lsbtest::run_lsb("run " + p.string() + " -p 'Once upon a time' -n 8 --temp 0 --mem-budget 1G");
  EXPECT_EQ(streamed.exit_code, 1);
  EXPECT_NE(streamed.err.find(want), std::string::npos) << streamed.err;
  // The intact file verifies.
  lsbtest::RunResult ok = lsbtest::run_lsb("inspect --verify " + stories_lsb("lsb1").string());
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("verify: all 47"), std::string::npos) << ok.out;
}

// Tensor checksums are checked lazily: opening a file with a damaged tensor succeeds, other
// tensors read fine, and the damaged one is refused, by name, when it is first asked for.
TEST(FormatReader, ChecksumsAreCheckedOnFirstAccessOnly) {
  std::string b = slurp(stories_lsb("lsb1"));
  const std::string bad_name = "model.layers.3.mlp.up_proj.weight";
  b[rd(b, entry_at(b, bad_name) + 64, 8) + 5] ^= 0x10;
  const fs::path p = lsbtest::temp_dir() / "lazy.lsb";
  spit(p, b);
  lsb::format::LsbReader r(p.string());
  EXPECT_NO_THROW(r.data(r.get("model.layers.2.mlp.up_proj.weight")));
  EXPECT_NO_THROW(r.data(r.get("model.embed_tokens.weight")));
  try {
    r.data(r.get(bad_name));
    ADD_FAILURE() << "damaged tensor was returned";
  } catch (const lsb::Error& e) {
    EXPECT_EQ(std::string(e.what()), p.string() + ": checksum mismatch in tensor '" + bad_name + "'");
  }
  EXPECT_THROW(r.verify_all(), lsb::Error);
}

// Dense passthrough is lossless: the .lsb of stories260K with every tensor f32 generates the same
// tokens and the same perplexity as the .bin it came from.
TEST(FormatPassthrough, RunAndEvalMatchSourceExactly) {
  const std::string lsbf = stories_lsb("f32").string();
  {
    auto src = lsb::open_model(stories());
    auto dst = lsb::open_model(lsbf);
    for (const lsb::TensorInfo& t : src->tensors()) {
      const auto a = src->data(t), b = dst->data(dst->get(t.name));
      ASSERT_EQ(a.size(), b.size()) << t.name;
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << t.name;
    }
  }
  const std::string gen = " -p 'Once upon a time' -n 48 --temp 0 --json";
  lsbtest::RunResult a = lsbtest::run_lsb("run " + stories() + " --tokenizer " + tok512() + gen);
  lsbtest::RunResult b = lsbtest::run_lsb("run " + lsbf + gen);  // embedded tokenizer
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja.at("tokens"), jb.at("tokens"));
  EXPECT_EQ(ja.at("text"), jb.at("text"));
  EXPECT_GT(ja.at("tokens").size(), 10u);

  const std::string ev = " --text " + LSB_SHARED("data/tinystories_valid_1000.txt") + " --ctx 256 --chunks 4 --json";
  lsbtest::RunResult ea = lsbtest::run_lsb("eval " + stories() + " --tokenizer " + tok512() + ev);
  lsbtest::RunResult eb = lsbtest::run_lsb("eval " + lsbf + ev);
  ASSERT_EQ(ea.exit_code, 0) << ea.err;
  ASSERT_EQ(eb.exit_code, 0) << eb.err;
  const double pa = nlohmann::json::parse(ea.out).at("ppl"), pb = nlohmann::json::parse(eb.out).at("ppl");
  EXPECT_EQ(pa, pb);
  EXPECT_GT(pa, 1.0);
}
