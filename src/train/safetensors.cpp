#include "train/safetensors.h"


#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/bf16.h"
#include "core/error.h"
#include "core/file_io.h"

namespace moe {

namespace {

size_t dtype_bytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16") return 2;
  if (dtype == "F64" || dtype == "I64") return 8;
  return 0;
}

size_t numel_of(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

template <typename U>
SafeTensor make_tensor(const char* dtype, const U* data, std::vector<int64_t> shape) {
  SafeTensor t;
  t.dtype = dtype;
  const size_t n = numel_of(shape);
  t.shape = std::move(shape);
  t.data.resize(n * sizeof(U));
  if (n) std::memcpy(t.data.data(), data, n * sizeof(U));
  return t;
}

}  // namespace

SafeTensor make_f32(const float* data, std::vector<int64_t> shape) {
  return make_tensor("F32", data, std::move(shape));
}
SafeTensor make_f64(const double* data, std::vector<int64_t> shape) {
  return make_tensor("F64", data, std::move(shape));
}
SafeTensor make_bf16(const float* data, std::vector<int64_t> shape) {
  std::vector<uint16_t> bits(numel_of(shape));
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = bf16(data[i]).bits;
  return make_tensor("BF16", bits.data(), std::move(shape));
}
SafeTensor make_i64(const int64_t* data, std::vector<int64_t> shape) {
  return make_tensor("I64", data, std::move(shape));
}

void write_safetensors(const std::string& path, const SafeTensorFile& file) {
  nlohmann::ordered_json header;
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  size_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes
  const uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));

  io::FileWriter f(path);
  f.write(len, 8);
  f.write(text.data(), text.size());
  for (const auto& [name, t] : file.tensors) f.write(t.data.data(), t.data.size());
  f.sync_and_close();
}

SafeTensorFile read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw DataError(path + ": cannot open: " + std::strerror(errno));
  const uint64_t size = uint64_t(f.tellg());
  f.seekg(0);
  if (size < 8) throw DataError(path + ": truncated safetensors file (" + std::to_string(size) + " bytes)");
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  if (n > size - 8) throw DataError(path + ": truncated safetensors file (header runs past the end)");
  std::string text(n, '\0');
  f.read(text.data(), std::streamsize(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw DataError(path + ": corrupt safetensors header: " + e.what());
  }
  if (!header.is_object()) throw DataError(path + ": corrupt safetensors header (not an object)");
  const uint64_t data_bytes = size - 8 - n;
  std::vector<unsigned char> data(data_bytes);
  f.read(reinterpret_cast<char*>(data.data()), std::streamsize(data_bytes));
  if (!f) throw DataError(path + ": read failed");

  SafeTensorFile out;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, mv] : v.items())
        if (mv.is_string()) out.metadata[k] = mv.get<std::string>();
      continue;
    }
    try {
      SafeTensor t;
      t.dtype = v.at("dtype").get<std::string>();
      t.shape = v.at("shape").get<std::vector<int64_t>>();
      const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
      const size_t width = dtype_bytes(t.dtype);
      if (width == 0) throw DataError(path + ": tensor " + name + ": unsupported dtype " + t.dtype);
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_bytes)
        throw DataError(path + ": tensor " + name + ": data offsets outside the file (truncated?)");
      if (off[1] - off[0] != numel_of(t.shape) * width)
        throw DataError(path + ": tensor " + name + ": size does not match its shape");
      t.data.assign(data.begin() + off[0], data.begin() + off[1]);
      out.tensors.emplace(name, std::move(t));
    } catch (const nlohmann::json::exception& e) {
      throw DataError(path + ": tensor " + name + ": corrupt header entry: " + e.what());
    }
  }
  return out;
}

template <typename T>
void copy_float_tensor(const SafeTensor& t, T* out, size_t numel, const std::string& what) {
  const size_t width = dtype_bytes(t.dtype);
  if ((t.dtype != "F32" && t.dtype != "F64" && t.dtype != "BF16") || t.data.size() != numel * width)
    throw DataError(what + ": expected " + std::to_string(numel) + " float values, found " +
                    t.dtype + " of " + std::to_string(t.data.size() / std::max<size_t>(width, 1)));
  for (size_t i = 0; i < numel; ++i) {
    if (t.dtype == "F32") {
      float v;
      std::memcpy(&v, t.data.data() + 4 * i, 4);
      out[i] = T(v);
    } else if (t.dtype == "BF16") {
      uint16_t b;
      std::memcpy(&b, t.data.data() + 2 * i, 2);
      out[i] = T(float(bf16::from_bits(b)));
    } else {
      double v;
      std::memcpy(&v, t.data.data() + 8 * i, 8);
      out[i] = T(v);
    }
  }
}

template void copy_float_tensor<float>(const SafeTensor&, float*, size_t, const std::string&);
template void copy_float_tensor<double>(const SafeTensor&, double*, size_t, const std::string&);

}  // namespace moe
