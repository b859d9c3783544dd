// The SentencePiece tokenizer as moe-data and moe-export use it: the
// training settings (chosen so that decode(encode(text)) == text for valid
// UTF-8) and loading a model with the checks the shards rely on.
#pragma once

#include <sentencepiece_processor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

namespace moe::data {

// Special ids recorded in every model tokenizer-train writes.
constexpr int kUnkId = 0, kBosId = 1, kEosId = 2, kPadId = 3;

// SentencePiece trainer arguments fixed by moe-data (BPE, byte fallback,
// identity normalisation, whitespace kept as is); the caller adds the
// per-run ones (vocab_size, model_prefix, sampling, threads).
std::unordered_map<std::string, std::string> trainer_settings();

struct Tokenizer {
  std::string path;
  uint64_t hash = 0;  // hash_file(path), recorded in every shard
  uint32_t vocab_size = 0;
  int bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
};

// A SentencePiece status message on one line, without the "file.cc(123)
// [condition]" prefix of its internal checks.
std::string clean_status_message(const std::string& message);

// Loads a model file; throws DataError naming the file when it is missing,
// not a SentencePiece model, or has no EOS piece (documents end with EOS).
Tokenizer load_tokenizer(const std::string& path);

}  // namespace moe::data
