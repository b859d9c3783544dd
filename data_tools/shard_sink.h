// Where prepare's tokens go: the shards of one split (train_00000.bin, ...),
// and the output directory, filled through a staging directory so that a
// failed or interrupted run leaves an earlier result untouched.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/shard_format.h"

namespace moe::data {

struct ShardInfo {
  std::string file;  // name inside the output directory
  uint64_t tokens = 0, documents = 0;
};

// The shards of one split. A shard holds whole documents and at most
// shard_tokens tokens, unless one document alone is longer.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string prefix, const ShardHeader& header,
              uint64_t shard_tokens);
  ~SplitWriter();
  void add_document(const uint32_t* tokens, size_t n);  // n includes the EOS
  void finish();

  uint64_t documents() const { return documents_; }
  uint64_t tokens() const { return tokens_; }
  const std::vector<ShardInfo>& shards() const { return shards_; }

 private:
  void close_shard();
  std::string dir_, prefix_;
  ShardHeader header_;
  uint64_t shard_tokens_;
  std::unique_ptr<ShardWriter> cur_;
  uint64_t documents_ = 0, tokens_ = 0;
  std::vector<ShardInfo> shards_;
};

// True for names a split writes: train_NNNNN.bin and val_NNNNN.bin.
bool is_shard_name(const std::string& name);

class OutputDir {
 public:
  // Creates `dir` if needed. Throws DataError when it already holds shards
  // and !force. Files are written to staging() until commit().
  OutputDir(std::string dir, bool force);
  ~OutputDir();  // an uncommitted staging directory is removed
  const std::string& staging() const { return staging_; }
  // Removes the shards of an earlier run (with force) and moves every
  // staged file into the directory, summary.json last. A failing file
  // operation (IoError) leaves none of the new files in the directory.
  void commit();

 private:
  std::string dir_, staging_;
  bool created_ = false, committed_ = false;
};

}  // namespace moe::data
