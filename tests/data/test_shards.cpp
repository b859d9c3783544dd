// Token shards on the reading side: ShardSet validation and the concatenated
// stream, path resolution, the stateless training sampler, the in-order
// validation reader, and a short training run on generated shards.
#include <gtest/gtest.h>

#include <chrono>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "data/mapped_file.h"
#include "data/shard_dataset.h"
#include "comm/comm.h"
#include "train/trainer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with its contents.
struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() /
           ("moe_shards_" + std::to_string(getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Token at stream position p: position-dependent, so reads can be checked.
using TokenFn = std::function<uint32_t(int64_t)>;
uint32_t tok16(int64_t p) { return uint32_t((p * 7 + 3) % 1000); }
uint32_t tok32(int64_t p) { return uint32_t((p * 7919 + 11) % 70000); }

ShardHeader header_for(uint32_t vocab) {
  ShardHeader h;
  h.token_bytes = token_bytes_for_vocab(vocab);
  h.vocab_size = vocab;
  h.bos_id = -1;
  h.eos_id = 0;
  h.pad_id = -1;
  h.tokenizer_hash = 0xABCDEF;
  return h;
}

// Writes tokens f(first) .. f(first + count - 1) as one shard.
void write_shard(const std::string& path, const ShardHeader& h, int64_t first, int64_t count,
                 const TokenFn& f) {
  ShardWriter w(path, h);
  std::vector<uint32_t> buf(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) buf[size_t(i)] = f(first + i);
  // append(_, 0) passes a null buffer to fwrite (UBSan); an empty shard skips it.
  if (count > 0) w.append(buf.data(), buf.size());
  w.end_document();
  w.finish();
}

// Shards of the given sizes, consecutive in the stream; returns their paths.
std::vector<std::string> write_split(const TempDir& d, const std::string& split,
                                     const std::vector<int64_t>& sizes, const ShardHeader& h,
                                     const TokenFn& f) {
  std::vector<std::string> paths;
  int64_t pos = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%05zu.bin", split.c_str(), i);
    paths.push_back(d / name);
    write_shard(paths.back(), h, pos, sizes[i], f);
    pos += sizes[i];
  }
  return paths;
}

std::string data_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a DataError: ") + e.what();
  }
  return "no error";
}

#define EXPECT_MSG_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (msg)

// Overwrites bytes of a file in place.
void patch(const std::string& path, size_t offset, const std::vector<unsigned char>& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(std::streamoff(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<unsigned char> le32(uint32_t v) {
  return {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};
}

// ------------------------------------------------------------------ ShardSet

void check_round_trip(uint32_t vocab, const TokenFn& f) {
  TempDir d;
  const std::vector<int64_t> sizes = {100, 1, 0, 57, 300};
  const auto paths = write_split(d, "train", sizes, header_for(vocab), f);
  ShardSet set(paths, vocab, d.path.string());
  ASSERT_EQ(set.total_tokens(), 458);
  EXPECT_EQ(set.num_shards(), 5u);
  EXPECT_EQ(set.header().token_bytes, token_bytes_for_vocab(vocab));
  EXPECT_EQ(set.header().vocab_size, vocab);
  EXPECT_EQ(set.header().token_count, 458u);
  EXPECT_EQ(set.header().doc_count, 5u);
  EXPECT_EQ(set.header().tokenizer_hash, 0xABCDEFu);
  EXPECT_MSG_HAS(set.describe(), d.path.string());
  EXPECT_MSG_HAS(set.describe(), "458 tokens");
  // The whole stream at once, then every window of a few lengths, many of
  // them crossing one or several shard boundaries (100, 101, 158).
  std::vector<int32_t> all(458);
  set.read(0, 458, all.data());
  for (int64_t p = 0; p < 458; ++p) ASSERT_EQ(all[size_t(p)], int32_t(f(p))) << p;
  for (int64_t n : {1, 2, 59, 200})
    for (int64_t p = 0; p + n <= 458; ++p) {
      std::vector<int32_t> w(size_t(n), -1);
      set.read(p, n, w.data());
      for (int64_t t = 0; t < n; ++t) ASSERT_EQ(w[size_t(t)], int32_t(f(p + t))) << p << "+" << t;
    }
  set.read(458, 0, all.data());  // empty read at the end is fine
  EXPECT_THROW(set.read(400, 59, all.data()), InternalError);
  EXPECT_THROW(set.read(-1, 2, all.data()), InternalError);
  // Moving keeps the mappings valid.
  ShardSet moved(std::move(set));
  std::vector<int32_t> w(3);
  moved.read(99, 3, w.data());
  EXPECT_EQ(w, (std::vector<int32_t>{int32_t(f(99)), int32_t(f(100)), int32_t(f(101))}));
}

TEST(ShardSet, RoundTripUint16AcrossShards) { check_round_trip(1000, tok16); }
TEST(ShardSet, RoundTripUint32AcrossShards) { check_round_trip(70000, tok32); }

TEST(ShardSet, HeaderErrorsNameTheFile) {
  TempDir d;
  const ShardHeader h = header_for(1000);
  auto fresh = [&](const std::string& name) {
    const std::string p = d / name;
    write_shard(p, h, 0, 50, tok16);
    return p;
  };
  auto open_err = [&](const std::string& p) {
    return data_error([&] { ShardSet s({p}, 1000, "spec"); });
  };
  {
    const auto p = fresh("magic.bin");
    patch(p, 0, {'X'});
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "bad magic");
  }
  {
    const auto p = fresh("version.bin");
    patch(p, 8, le32(2));
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "unsupported shard version 2");
  }
  {
    const auto p = fresh("width.bin");
    patch(p, 12, le32(3));
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "bad token width 3");
  }
  {
    const auto p = fresh("truncated.bin");
    fs::resize_file(p, fs::file_size(p) - 1);
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "truncated");
  }
  {
    const auto p = fresh("trailing.bin");
    fs::resize_file(p, fs::file_size(p) + 3);
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "3 trailing bytes");
  }
  {  // a token count whose byte size wraps around 2^64 onto the file's real size
    // 50 uint16 tokens are 100 bytes; 2^63 + 50 tokens are 2^64 + 100 bytes.
    const auto p = fresh("wraps.bin");
    const uint64_t lie = (uint64_t(1) << 63) + 50;
    std::vector<unsigned char> bytes(8);
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = uint8_t(lie >> (8 * i));
    patch(p, 32, bytes);
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "truncated");
  }
  for (uintmax_t size : {uintmax_t(0), uintmax_t(100), uintmax_t(255)}) {
    const auto p = fresh("short" + std::to_string(size) + ".bin");
    fs::resize_file(p, size);
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "shorter than its 256-byte header");
  }
  {
    const auto p = d / "missing.bin";
    const auto m = open_err(p);
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "cannot open");
  }
  {  // a shard written for a larger vocab than the model's embedding table
    const auto p = fresh("vocab.bin");
    const auto m = data_error([&] { ShardSet s({p}, 999, "spec"); });
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "model.vocab_size 999");
    EXPECT_NO_THROW(ShardSet({p}, 1001, "spec"));  // a smaller shard vocab is fine
  }
  {  // a corrupt token is caught when read, naming the file
    const auto p = fresh("badtoken.bin");
    patch(p, kShardHeaderBytes + 2 * 10, {0xFF, 0xFF});
    ShardSet s({p}, 1000, "spec");
    std::vector<int32_t> w(20);
    const auto m = data_error([&] { s.read(0, 20, w.data()); });
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "token 65535 at index 10");
  }
  // One bad shard after good ones still fails, naming the bad one.
  {
    const auto good = fresh("good.bin"), bad = fresh("bad.bin");
    patch(bad, 0, {'Y'});
    const auto m = data_error([&] { ShardSet s({good, bad}, 1000, "spec"); });
    EXPECT_MSG_HAS(m, bad);
  }
}

// A shard changed on disk under a running job (data/mapped_file.h): the next
// read is a DataError naming the file; a replacement by rename is not a
// change (the mapped file stays readable); a read that faults all the same is
// one line and exit code 2, not a silent SIGBUS.
TEST(ShardSet, AShardChangedOnDiskIsAnErrorNamingIt) {
  TempDir d;
  const ShardHeader h = header_for(1000);
  std::vector<int32_t> w(20);
  {  // truncated
    const std::string p = d / "truncated.bin";
    write_shard(p, h, 0, 50, tok16);
    ShardSet s({p}, 1000, "spec");
    s.read(0, 20, w.data());
    fs::resize_file(p, fs::file_size(p) - 40);
    const auto m = data_error([&] { s.read(0, 20, w.data()); });
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "changed on disk");
    EXPECT_MSG_HAS(m, "356 bytes when opened, now 316");
  }
  {  // rewritten in place, same size (a later modification time)
    const std::string p = d / "rewritten.bin";
    write_shard(p, h, 0, 50, tok16);
    ShardSet s({p}, 1000, "spec");
    patch(p, kShardHeaderBytes, {0x01, 0x00});
    fs::last_write_time(p, fs::last_write_time(p) + std::chrono::seconds(5));
    const auto m = data_error([&] { s.read(0, 20, w.data()); });
    EXPECT_MSG_HAS(m, p);
    EXPECT_MSG_HAS(m, "rewritten");
  }
  {  // replaced by a rename: the run reads the file it mapped, unchanged
    const std::string p = d / "replaced.bin", other = d / "other.bin";
    write_shard(p, h, 0, 50, tok16);
    write_shard(other, h, 7, 10, tok16);
    ShardSet s({p}, 1000, "spec");
    fs::rename(other, p);
    s.read(0, 20, w.data());
    for (int t = 0; t < 20; ++t) EXPECT_EQ(w[size_t(t)], int32_t(tok16(t)));
  }
}

TEST(ShardSetDeathTest, AReadThatFaultsIsOneLineAndExitCode2) {
  TempDir d;
  const std::string p = d / "sigbus.bin";
  write_shard(p, header_for(1000), 0, 20000, tok16);  // ~40 KB: several pages
  EXPECT_EXIT(
      {
        MappedFile f(p, "shard");
        fs::resize_file(p, 0);
        // Past the check, as when truncated between check_unchanged and the read.
        volatile unsigned char byte = f.data()[f.size() - 1];
        (void)byte;
        std::exit(0);
      },
      ::testing::ExitedWithCode(2), "error: " + p + ": truncated on disk while this run reads it");
}

TEST(ShardSet, ShardsThatDisagreeNameBothFilesAndTheField) {
  TempDir d;
  const ShardHeader base = header_for(1000);
  const std::string a = d / "a.bin";
  write_shard(a, base, 0, 20, tok16);
  struct Case {
    const char* field;
    std::function<void(ShardHeader&)> change;
  };
  const std::vector<Case> cases = {
      {"token width", [](ShardHeader& h) { h.token_bytes = 4; }},
      {"vocab_size", [](ShardHeader& h) { h.vocab_size = 900; }},
      {"bos_id", [](ShardHeader& h) { h.bos_id = 1; }},
      {"eos_id", [](ShardHeader& h) { h.eos_id = 2; }},
      {"pad_id", [](ShardHeader& h) { h.pad_id = 3; }},
      {"tokenizer_hash", [](ShardHeader& h) { h.tokenizer_hash = 42; }},
  };
  for (const Case& c : cases) {
    ShardHeader h = base;
    c.change(h);
    const std::string b = d / (std::string("b_") + std::to_string(&c - cases.data()) + ".bin");
    write_shard(b, h, 0, 20, [](int64_t p) { return uint32_t(p % 900); });
    const auto m = data_error([&] { ShardSet s({a, b}, 1000, "spec"); });
    EXPECT_MSG_HAS(m, a);
    EXPECT_MSG_HAS(m, b);
    EXPECT_MSG_HAS(m, c.field);
  }
}

TEST(ShardSet, EmptySetsAreErrors) {
  TempDir d;
  EXPECT_MSG_HAS(data_error([&] { ShardSet s({}, 1000, "data/nowhere"); }), "data/nowhere");
  const std::string p = d / "train_00000.bin";
  write_shard(p, header_for(1000), 0, 0, tok16);
  const auto m = data_error([&] { ShardSet s({p, p}, 1000, d.path.string()); });
  EXPECT_MSG_HAS(m, d.path.string());
  EXPECT_MSG_HAS(m, "no tokens");
}

// ------------------------------------------------------------ resolve_shards

TEST(ResolveShards, DirectoryGlobFileAndNothing) {
  TempDir d;
  const ShardHeader h = header_for(1000);
  for (const char* name : {"train_00010.bin", "train_00002.bin", "val_00000.bin", "notes.txt"})
    write_shard(d / name, h, 0, 5, tok16);
  fs::create_directories(d / "train_sub.bin");  // a directory is never a shard
  {
    ShardWriter unfinished(d / "train_00011.bin", h);  // its .tmp is not a shard either
    EXPECT_EQ(resolve_shards(d.path.string(), "train"),
              (std::vector<std::string>{d / "train_00002.bin", d / "train_00010.bin"}));
  }
  EXPECT_EQ(resolve_shards(d.path.string(), "val"), (std::vector<std::string>{d / "val_00000.bin"}));
  EXPECT_EQ(resolve_shards(d / "*_000*.bin", "train"),
            (std::vector<std::string>{d / "train_00002.bin", d / "train_00010.bin",
                                      d / "val_00000.bin"}));
  EXPECT_EQ(resolve_shards(d / "notes.txt", "train"), (std::vector<std::string>{d / "notes.txt"}));

  TempDir empty;
  auto m = data_error([&] { resolve_shards(empty.path.string(), "train"); });
  EXPECT_MSG_HAS(m, empty.path.string());
  EXPECT_MSG_HAS(m, "train_*.bin");
  m = data_error([&] { resolve_shards(d / "test_*.bin", "val"); });
  EXPECT_MSG_HAS(m, d / "test_*.bin");
  EXPECT_MSG_HAS(m, "val");
  m = data_error([&] { resolve_shards(d / "nothing.bin", "train"); });
  EXPECT_MSG_HAS(m, d / "nothing.bin");
  EXPECT_MSG_HAS(m, "train");
  EXPECT_MSG_HAS(data_error([&] { resolve_shards("", "train"); }), "train");
}

// -------------------------------------------------------------- ShardWriter

TEST(ShardWriter, UnfinishedShardLeavesNoFile) {
  TempDir d;
  const std::string p = d / "train_00000.bin";
  {
    ShardWriter w(p, header_for(1000));
    std::vector<uint32_t> t(100, 7);
    w.append(t.data(), t.size());
    EXPECT_FALSE(fs::exists(p));  // nothing at the final path while writing
  }  // destroyed without finish(), as when the tool dies mid-shard
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_TRUE(fs::is_empty(d.path));
}

// ---------------------------------------------------------- ShardTokenSource

// All tokens of a step as ranks 0..W-1 read them, in rank order (as
// test_data_schedule.cpp does).
std::vector<int32_t> global_batch(const TokenSource& src, int S, int G, int micro, int W,
                                  int64_t step) {
  std::vector<int32_t> all;
  for (int r = 0; r < W; ++r) {
    BatchSampler s(src, S, G, micro, r, W);
    std::vector<int32_t> tok(size_t(micro) * S), tgt(tok.size());
    for (int m = 0; m < s.micro_batches_per_rank(); ++m) {
      s.micro_batch(step, m, tok.data(), tgt.data());
      all.insert(all.end(), tok.begin(), tok.end());
    }
  }
  return all;
}

TEST(ShardTokenSource, DeterministicAndWorldSizeIndependent) {
  TempDir d;
  const auto paths = write_split(d, "train", {300, 200, 500}, header_for(1000), tok16);
  const int S = 16, G = 8;
  ShardTokenSource a(ShardSet(paths, 1000, "x"), 5, S, G), b(ShardSet(paths, 1000, "x"), 5, S, G);
  ShardTokenSource other_seed(ShardSet(paths, 1000, "x"), 6, S, G);
  EXPECT_MSG_HAS(a.describe(), "1000 tokens");
  for (int64_t step : {0, 1, 7, 1000000}) {
    const auto w1 = global_batch(a, S, G, 2, 1, step);
    EXPECT_EQ(global_batch(b, S, G, 2, 1, step), w1);  // a second reader agrees
    EXPECT_EQ(global_batch(a, S, G, 1, 2, step), w1);
    EXPECT_EQ(global_batch(a, S, G, 2, 4, step), w1);
    EXPECT_EQ(global_batch(a, S, G, 1, 4, step), w1);
    EXPECT_NE(global_batch(other_seed, S, G, 2, 1, step), w1);
    EXPECT_NE(global_batch(a, S, G, 2, 1, step + 1), w1);
  }
}

TEST(ShardTokenSource, WindowsInBoundsAndContiguous) {
  TempDir d;
  const auto paths = write_split(d, "train", {40, 25, 60}, header_for(1000), tok16);
  const int S = 20, G = 4;
  ShardTokenSource src(ShardSet(paths, 1000, "x"), 3, S, G);
  const int64_t total = 125;
  std::vector<int32_t> seq(S + 1);
  int64_t lo = total, hi = -1, crossing = 0;
  for (int64_t step = 0; step < 500; ++step)
    for (int j = 0; j < G; ++j) {
      const int64_t st = src.start(step, j);
      ASSERT_GE(st, 0);
      ASSERT_LE(st, total - (S + 1));
      lo = std::min(lo, st);
      hi = std::max(hi, st);
      crossing += (st < 40 && st + S >= 40) || (st < 65 && st + S >= 65);
      src.sequence(step, j, seq.data());
      for (int t = 0; t <= S; ++t) ASSERT_EQ(seq[t], int32_t(tok16(st + t)));
    }
  EXPECT_EQ(lo, 0);  // both ends of the range are reachable
  EXPECT_EQ(hi, total - (S + 1));
  EXPECT_GT(crossing, 0);
  // Exactly S+1 tokens is the smallest usable set; fewer is an error.
  EXPECT_NO_THROW(ShardTokenSource(ShardSet(paths, 1000, "x"), 3, 124, G));
  const auto m = data_error([&] { ShardTokenSource(ShardSet(paths, 1000, "x"), 3, 125, G); });
  EXPECT_MSG_HAS(m, "model.seq_len");
}

// ---------------------------------------------------------- ValidationReader

TEST(ValidationReader, EveryTargetOnceInOrder) {
  TempDir d;
  const auto paths = write_split(d, "val", {100, 37, 250}, header_for(1000), tok16);
  const int S = 16;
  ValidationReader v(ShardSet(paths, 1000, "x"), S);
  ASSERT_EQ(v.num_sequences(), (387 - 1) / S);  // 24
  EXPECT_EQ(v.tokens_skipped(), 386 - 24 * S);  // 2
  std::vector<int32_t> seq(S + 1);
  v.read(23, seq.data());
  for (int t = 0; t <= S; ++t) EXPECT_EQ(seq[t], int32_t(tok16(23 * S + t)));
  // Walk in batches of 5 (the last one short), collecting the targets.
  std::vector<int32_t> targets_seen, tokens_seen;
  for (int64_t first = 0; first < v.num_sequences(); first += 5) {
    const int B = int(std::min<int64_t>(5, v.num_sequences() - first));
    std::vector<int32_t> tok(size_t(B) * S), tgt(tok.size());
    v.batch(first, B, tok.data(), tgt.data());
    tokens_seen.insert(tokens_seen.end(), tok.begin(), tok.end());
    targets_seen.insert(targets_seen.end(), tgt.begin(), tgt.end());
  }
  const int64_t n = v.num_sequences() * S;
  ASSERT_EQ(int64_t(targets_seen.size()), n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(tokens_seen[size_t(i)], int32_t(tok16(i))) << i;          // inputs 0..n-1
    ASSERT_EQ(targets_seen[size_t(i)], int32_t(tok16(i + 1))) << i;     // targets 1..n
  }
  EXPECT_THROW(v.batch(20, 5, seq.data(), seq.data()), InternalError);
  EXPECT_THROW(v.read(24, seq.data()), InternalError);
  // An exact fit skips nothing: 1 + k*S tokens.
  const auto exact = write_split(d, "exact", {1 + 3 * S}, header_for(1000), tok16);
  ValidationReader e(ShardSet(exact, 1000, "x"), S);
  EXPECT_EQ(e.num_sequences(), 3);
  EXPECT_EQ(e.tokens_skipped(), 0);
  const auto tiny = write_split(d, "tiny", {S}, header_for(1000), tok16);
  EXPECT_MSG_HAS(data_error([&] { ValidationReader(ShardSet(tiny, 1000, "x"), S); }),
                 "model.seq_len");
}

// ------------------------------------------------------------- end to end

Config tiny_config(const std::string& data_dir) {
  Config c;
  c.model = {.vocab_size = 64, .hidden = 32, .heads = 2, .layers = 2, .first_dense_layers = 1,
             .dense_intermediate = 64, .seq_len = 32, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.006};
  c.moe.n_shared = 1;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 16;
  c.train.steps = 3;
  c.train.global_batch = 8;
  c.train.micro_batch = 4;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 1;
  c.train.min_lr = 3e-4;
  c.train.threads = 1;
  c.data.source = DataSource::Shards;
  c.data.path = data_dir;
  return c;
}

TEST(ShardTraining, ThreeStepsOnAShardDirectory) {
  TempDir d;
  ShardHeader h = header_for(60);  // below model.vocab_size 64: allowed
  const TokenFn f = [](int64_t p) { return uint32_t((p * 13 + p / 7) % 60); };
  write_split(d, "train", {700, 500}, h, f);
  write_split(d, "val", {200}, h, f);
  Config c = tiny_config(d.path.string());
  ASSERT_NO_THROW(validate_config(c, 1));

  auto data = make_train_source(c);
  EXPECT_MSG_HAS(data->describe(), "1200 tokens");
  auto be = make_cpu_backend<float>(c.train.threads);
  LocalComm comm;
  Trainer<float> trainer(c, *be, comm, *data);
  for (int64_t s = 0; s < c.train.steps; ++s) {
    const StepStats st = trainer.train_step(s);
    EXPECT_TRUE(std::isfinite(st.loss)) << s;
    EXPECT_NEAR(st.loss, std::log(64.0), 0.5) << s;  // near uniform at init
    EXPECT_EQ(st.tokens_seen, (s + 1) * 8 * 32);
  }

  // Validation: the directory's val_*.bin by default, data.val_path when set.
  auto val = make_validation_reader(c);
  ASSERT_NE(val, nullptr);
  EXPECT_EQ(val->num_sequences(), (200 - 1) / 32);
  c.data.val_path = d / "train_00001.bin";
  EXPECT_EQ(make_validation_reader(c)->num_sequences(), (500 - 1) / 32);
  c.data.val_path = d / "val_9*.bin";
  EXPECT_MSG_HAS(data_error([&] { make_validation_reader(c); }), "val_9*.bin");
  c.data.val_path = "";
  fs::remove(d / "val_00000.bin");
  EXPECT_EQ(make_validation_reader(c), nullptr);  // a directory without val shards
  c.data.source = DataSource::Synthetic;
  EXPECT_EQ(make_validation_reader(c), nullptr);

  // A model vocab below the shards' is refused before training starts.
  c = tiny_config(d.path.string());
  c.model.vocab_size = 50;
  const auto m = data_error([&] { make_train_source(c); });
  EXPECT_MSG_HAS(m, d / "train_00000.bin");
  EXPECT_MSG_HAS(m, "model.vocab_size");
}

}  // namespace
}  // namespace moe
