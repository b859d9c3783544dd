#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "data/shard_format.h"

namespace moe::data {

std::unordered_map<std::string, std::string> trainer_settings() {
  return {
      {"model_type", "bpe"},
      // Characters outside the coverage become UTF-8 byte pieces: no <unk>.
      {"byte_fallback", "true"},
      {"unk_id", std::to_string(kUnkId)},
      {"bos_id", std::to_string(kBosId)},
      {"eos_id", std::to_string(kEosId)},
      {"pad_id", std::to_string(kPadId)},
      // Exact round trip: no NFKC, whitespace kept (code indentation), and no
      // dummy-prefix space that decoding would have to strip again.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"max_sentence_length", "16384"},
      // SentencePiece's own log lines (its whole spec, every merge, warnings
      // such as "No valid symbol found" before a failure) would drown
      // moe-data's output; its errors come back as a status and are reported.
      {"minloglevel", "2"},
  };
}

std::string clean_status_message(const std::string& message) {
  std::string s = message;
  std::replace(s.begin(), s.end(), '\n', ' ');
  // "./src/trainer_interface.cc(580) [cond] text" -> "text"
  const size_t paren = s.find(") [");
  if (paren != std::string::npos && s.find(".cc(") < paren) {
    int depth = 0;
    for (size_t i = paren + 2; i < s.size(); ++i) {
      if (s[i] == '[') ++depth;
      if (s[i] == ']' && --depth == 0) {
        s.erase(0, i + 1);
        break;
      }
    }
  }
  const size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

Tokenizer load_tokenizer(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw DataError(path + ": cannot read tokenizer model: " + std::strerror(errno));
  }
  Tokenizer t;
  t.path = path;
  t.sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = t.sp->Load(path);
  if (!st.ok()) {
    const std::string why = clean_status_message(st.message());
    throw DataError(path + ": not a SentencePiece model" + (why.empty() ? "" : " (" + why + ")"));
  }
  t.vocab_size = uint32_t(t.sp->GetPieceSize());
  t.bos_id = t.sp->bos_id();
  t.eos_id = t.sp->eos_id();
  t.pad_id = t.sp->pad_id();
  t.unk_id = t.sp->unk_id();
  if (t.eos_id < 0)
    throw DataError(path +
                    ": the tokenizer has no EOS piece (moe-data ends every document with "
                    "EOS); train one with moe-data tokenizer-train");
  t.hash = hash_file(path);
  return t;
}

}  // namespace moe::data
