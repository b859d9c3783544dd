// Minimal safetensors reader/writer (https://huggingface.co/docs/safetensors):
// an 8-byte little-endian header length, a JSON header mapping each tensor
// name to {dtype, shape, data_offsets}, then the raw little-endian data.
// Checkpoints hold F32 (F64 in float64 runs) tensors; moe-export also writes
// BF16. Readers of any framework can open them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe {

struct SafeTensor {
  std::string dtype;             // "F32", "F64", "BF16" or "I64"
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // raw little-endian bytes
};

struct SafeTensorFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Writes `file` to `path` and fsyncs it (core/file_io.h). Throws IoError naming the path.
void write_safetensors(const std::string& path, const SafeTensorFile& file);
// Reads and validates (header bounds, offsets inside the file, sizes match
// dtype x shape). Throws DataError naming the path and the problem.
SafeTensorFile read_safetensors(const std::string& path);

// Helpers for float tensors.
SafeTensor make_f32(const float* data, std::vector<int64_t> shape);
SafeTensor make_f64(const double* data, std::vector<int64_t> shape);
SafeTensor make_i64(const int64_t* data, std::vector<int64_t> shape);
// fp32 values rounded to bf16 (nearest even).
SafeTensor make_bf16(const float* data, std::vector<int64_t> shape);
// Copies a tensor's values into out (numel entries), converting F32/F64/BF16 to T.
// Throws DataError when the dtype is not a float type or numel differs.
template <typename T>
void copy_float_tensor(const SafeTensor& t, T* out, size_t numel, const std::string& what);

}  // namespace moe
