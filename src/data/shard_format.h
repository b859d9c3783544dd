// Token shard format (docs/design.md section 5). A shard is a little-endian file:
//
//   offset  size  field
//   0       8     magic "MOELFBTK"
//   8       4     version (1)
//   12      4     bytes per token: 2 (uint16) or 4 (uint32)
//   16      4     vocab_size of the tokenizer that wrote it
//   20      4     bos_id  (int32, -1 if none)
//   24      4     eos_id  (int32; documents are separated by EOS)
//   28      4     pad_id  (int32, -1 if none)
//   32      8     token_count
//   40      8     doc_count
//   48      8     tokenizer_hash (FNV-1a of the tokenizer model file)
//   56      200   zero
//   256           token_count tokens
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/file_io.h"

namespace moe {

constexpr char kShardMagic[8] = {'M', 'O', 'E', 'L', 'F', 'B', 'T', 'K'};
constexpr uint32_t kShardVersion = 1;
constexpr size_t kShardHeaderBytes = 256;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint32_t vocab_size = 0;
  int32_t bos_id = -1, eos_id = -1, pad_id = -1;
  uint64_t token_count = 0;
  uint64_t doc_count = 0;
  uint64_t tokenizer_hash = 0;

  bool operator==(const ShardHeader&) const = default;
};

// 2 when every id of the vocab fits in uint16, else 4.
inline uint32_t token_bytes_for_vocab(uint32_t vocab) { return vocab <= 65536 ? 2 : 4; }

// Serialises a header into exactly kShardHeaderBytes.
void encode_shard_header(const ShardHeader& h, unsigned char out[kShardHeaderBytes]);
// Parses and checks a header (magic, version, token width, ids below the
// vocab); throws DataError naming `path` and the problem.
ShardHeader decode_shard_header(const unsigned char* bytes, size_t size, const std::string& path);
// Checks that a file of `file_bytes` holds exactly the header's tokens;
// throws DataError ("truncated" / "trailing bytes") naming `path`.
void check_shard_size(const ShardHeader& h, uint64_t file_bytes, const std::string& path);

// Writes one shard: tokens are appended as they come, then the header is
// written with the final counts, the file fsynced and renamed from a
// temporary name, so a shard that exists is complete. File operations go
// through core/file_io.h (IoError on a full disk).
class ShardWriter {
 public:
  ShardWriter(const std::string& path, const ShardHeader& header_template);
  ~ShardWriter();  // an unfinished shard's temporary file is removed
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(const uint32_t* tokens, size_t n);  // checks each id < vocab
  void end_document();                            // counts one document
  uint64_t tokens() const { return header_.token_count; }
  // Completes the file (header, fsync, rename); returns the final header.
  ShardHeader finish();

 private:
  void flush();
  std::string path_, tmp_path_;
  ShardHeader header_;
  std::unique_ptr<io::FileWriter> file_;
  std::vector<unsigned char> buffer_;  // tokens not yet written
};

// FNV-1a of a whole file (the tokenizer hash); throws DataError if unreadable.
uint64_t hash_file(const std::string& path);

}  // namespace moe
