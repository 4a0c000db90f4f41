// imatrix_add_uniform — copy a GGUF imatrix file and add a UNIFORM entry (every column weight 1)
// for tensors the imatrix tool never sees, such as token_embd.weight (a row lookup, not a matrix
// product, so llama-imatrix collects no activations for it).
//
//   imatrix_add_uniform IN.gguf OUT.gguf TENSOR_NAME N_COLUMNS [TENSOR_NAME N_COLUMNS ...]
//
// Why: llama-quantize refuses (GGML_ASSERT) to quantize a tensor to IQ1_S, IQ2_XXS or IQ2_XS
// without importance data, so with --pure the token embeddings cannot be stored in those types.
// A uniform entry is the neutral choice (plain unweighted error); it is NOT calibration data.
// Entries already present are left untouched.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"

int main(int argc, char** argv) {
  if (argc < 5 || (argc - 3) % 2 != 0) {
    std::fprintf(stderr, "usage: %s IN.gguf OUT.gguf TENSOR_NAME N_COLUMNS [...]\n", argv[0]);
    return 2;
  }
  ggml_context* data_ctx = nullptr;
  gguf_init_params ip = {/*no_alloc=*/false, /*ctx=*/&data_ctx};
  gguf_context* in = gguf_init_from_file(argv[1], ip);
  if (!in) { std::fprintf(stderr, "imatrix_add_uniform: cannot read %s\n", argv[1]); return 1; }

  // chunk_count * chunk_size = number of activation rows the real entries were averaged over;
  // the count only scales in_sum2 (the quantizer uses in_sum2 / counts), any positive value works.
  float count = 1.0f;
  int64_t k = gguf_find_key(in, "imatrix.chunk_count"), ks = gguf_find_key(in, "imatrix.chunk_size");
  if (k >= 0 && ks >= 0) count = float(gguf_get_val_u32(in, k)) * float(gguf_get_val_u32(in, ks));

  gguf_context* out = gguf_init_empty();
  gguf_set_kv(out, in);
  for (int64_t i = 0; i < gguf_get_n_tensors(in); ++i)
    gguf_add_tensor(out, ggml_get_tensor(data_ctx, gguf_get_tensor_name(in, i)));

  size_t mem = 0;
  for (int a = 3; a < argc; a += 2)
    mem += 2 * ggml_tensor_overhead() + (size_t(std::atoll(argv[a + 1])) + 1) * sizeof(float) + 2 * GGML_MEM_ALIGN;
  ggml_init_params gp = {mem, nullptr, false};
  ggml_context* new_ctx = ggml_init(gp);
  for (int a = 3; a < argc; a += 2) {
    const std::string name = argv[a];
    const int64_t n = std::atoll(argv[a + 1]);
    if (gguf_find_tensor(in, (name + ".in_sum2").c_str()) >= 0) {
      std::fprintf(stderr, "imatrix_add_uniform: %s already has an entry, kept\n", name.c_str());
      continue;
    }
    ggml_tensor* s = ggml_new_tensor_2d(new_ctx, GGML_TYPE_F32, n, 1);
    ggml_tensor* c = ggml_new_tensor_2d(new_ctx, GGML_TYPE_F32, 1, 1);
    ggml_format_name(s, "%s.in_sum2", name.c_str());
    ggml_format_name(c, "%s.counts", name.c_str());
    for (int64_t j = 0; j < n; ++j) ((float*)s->data)[j] = count;  // mean square = 1
    ((float*)c->data)[0] = count;
    gguf_add_tensor(out, s);
    gguf_add_tensor(out, c);
    std::fprintf(stderr, "imatrix_add_uniform: added uniform entry for %s (%lld columns)\n", name.c_str(),
                 (long long)n);
  }
  if (!gguf_write_to_file(out, argv[2], false)) {
    std::fprintf(stderr, "imatrix_add_uniform: cannot write %s\n", argv[2]);
    return 1;
  }
  gguf_free(out); gguf_free(in); ggml_free(new_ctx); ggml_free(data_ctx);
  return 0;
}
