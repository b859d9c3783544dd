#include "data_tools/shard_sink.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"

namespace moe::data {

namespace fs = std::filesystem;

SplitWriter::SplitWriter(std::string dir, std::string prefix, const ShardHeader& header,
                         uint64_t shard_tokens)
    : dir_(std::move(dir)),
      prefix_(std::move(prefix)),
      header_(header),
      shard_tokens_(shard_tokens) {}

SplitWriter::~SplitWriter() = default;

void SplitWriter::add_document(const uint32_t* tokens, size_t n) {
  if (cur_ && cur_->tokens() > 0 && cur_->tokens() + n > shard_tokens_) close_shard();
  if (!cur_) {
    const std::string name = fmt::format("{}_{:05}.bin", prefix_, shards_.size());
    cur_ = std::make_unique<ShardWriter>(dir_ + "/" + name, header_);
    shards_.push_back({name, 0, 0});
  }
  cur_->append(tokens, n);
  cur_->end_document();
  ++documents_;
  tokens_ += n;
}

void SplitWriter::close_shard() {
  const ShardHeader h = cur_->finish();
  cur_.reset();
  shards_.back().tokens = h.token_count;
  shards_.back().documents = h.doc_count;
}

void SplitWriter::finish() {
  if (cur_) close_shard();
}

bool is_shard_name(const std::string& name) {
  for (const char* prefix : {"train_", "val_"}) {
    const std::string p = prefix;
    if (name.size() <= p.size() + 4 || name.compare(0, p.size(), p) != 0) continue;
    if (name.compare(name.size() - 4, 4, ".bin") != 0) continue;
    const std::string digits = name.substr(p.size(), name.size() - p.size() - 4);
    if (digits.find_first_not_of("0123456789") == std::string::npos) return true;
  }
  return false;
}

namespace {

std::vector<fs::path> shards_in(const std::string& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_shard_name(it->path().filename().string())) out.push_back(it->path());
  if (ec) throw DataError(dir + ": cannot list directory: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

OutputDir::OutputDir(std::string dir, bool force) : dir_(std::move(dir)) {
  std::error_code ec;
  if (fs::exists(dir_, ec) && !fs::is_directory(dir_, ec))
    throw DataError(dir_ + ": exists and is not a directory");
  created_ = fs::create_directories(dir_, ec);
  if (ec) throw DataError(dir_ + ": cannot create directory: " + ec.message());
  const auto old = shards_in(dir_);
  if (!old.empty() && !force)
    throw DataError(dir_ + ": already holds " + std::to_string(old.size()) + " shards (e.g. " +
                    old.front().filename().string() +
                    "); use --force to replace them, or another --output");
  staging_ = dir_ + "/.moe-data.partial";
  fs::remove_all(staging_, ec);  // left over from an interrupted run
  io::make_dirs(staging_);
}

OutputDir::~OutputDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
  if (created_) fs::remove(dir_, ec);  // only when still empty
}

void OutputDir::commit() {
  std::error_code ec;
  // An earlier run's summary goes first: a summary.json means the shards
  // beside it are complete, which they are not once the old ones are removed.
  const fs::path summary = fs::path(dir_) / "summary.json";
  fs::remove(summary, ec);
  if (ec) throw DataError(summary.string() + ": cannot remove: " + ec.message());
  for (const auto& p : shards_in(dir_)) {
    fs::remove(p, ec);
    if (ec) throw DataError(p.string() + ": cannot remove: " + ec.message());
  }
  std::vector<fs::path> shards, last;
  for (fs::directory_iterator it(staging_, ec), end; !ec && it != end; it.increment(ec))
    (it->path().filename() == "summary.json" ? last : shards).push_back(it->path());
  if (ec) throw DataError(staging_ + ": cannot list directory: " + ec.message());
  // Shards, a directory sync, then summary.json and another sync. A failure
  // part way takes back what was moved, the summary first: the directory
  // never holds part of a run.
  std::vector<std::string> moved;
  auto move_in = [&](const std::vector<fs::path>& files) {
    for (const auto& p : files) {
      const std::string to = (fs::path(dir_) / p.filename()).string();
      io::rename_path(p.string(), to);
      moved.push_back(to);
    }
    io::sync_dir(dir_);
  };
  try {
    move_in(shards);
    move_in(last);
  } catch (...) {
    for (auto m = moved.rbegin(); m != moved.rend(); ++m) io::remove_quietly(*m);
    throw;
  }
  fs::remove(staging_, ec);
  committed_ = true;
}

}  // namespace moe::data
