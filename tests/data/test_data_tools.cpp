// moe-data as a user runs it: a tokenizer trained on a generated corpus, then
// shards that decode back to exactly the input documents, a split and shard
// bytes independent of the thread count, gzip/JSONL/directory inputs, one-line
// errors (exit code 2), and flat memory on an input larger than that memory.
//
// Exactness: tokenizer-train fixes identity normalisation, no dummy prefix and
// no whitespace folding (src/tokenizer/tokenizer.cpp), so decode(encode(doc)) ==
// doc for valid UTF-8 without U+2581; the documents below are compared byte
// for byte.
#include <gtest/gtest.h>

#include "support/command.h"
#include <sentencepiece_processor.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/shard_format.h"
#include "data_tools/prepare.h"

namespace {

namespace fs = std::filesystem;

const std::string kBin = std::string(MOE_BINARY_DIR) + "/moe-data";

using Result = moe::test::CommandResult;
using moe::test::expect_one_line_error;

Result run(const std::string& args) { return moe::test::run_command(kBin + " " + args); }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

void write_gzip(const fs::path& p, const std::string& s) {
  gzFile g = gzopen(p.c_str(), "wb");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(gzwrite(g, s.data(), unsigned(s.size())), int(s.size()));
  gzclose(g);
}

// English-like documents with the awkward parts of real text: indentation,
// runs of spaces, tabs, digits, punctuation, accents, CJK and emoji (byte
// fallback). Paragraph documents hold no blank line (that would split them).
std::vector<std::string> make_documents(int n, uint32_t seed) {
  static const std::vector<std::string> words = {
      "the",        "of",      "and",      "to",      "in",      "a",        "is",
      "that",       "for",     "it",       "as",      "was",     "with",     "be",
      "by",         "on",      "not",      "he",      "this",    "are",      "or",
      "his",        "from",    "at",       "which",   "but",     "have",     "an",
      "they",       "you",     "were",     "their",   "one",     "all",      "we",
      "can",        "her",     "has",      "there",   "been",    "if",       "more",
      "when",       "will",    "would",    "who",     "so",      "no",       "model",
      "expert",     "token",   "balance",  "router",  "layer",   "training", "gradient",
      "loss",       "bias",    "language", "data",    "river",   "mountain", "history",
      "science",    "music",   "garden",   "window",  "morning", "city",     "ancient",
      "quickly",    "between", "through",  "because", "another", "without",  "number",
      "café",       "naïve",   "Zürich",   "façade",  "東京",    "🙂",     "—",
      "“quoted”",   "x²",      "don't",    "e.g.",    "1987",    "3.14",     "42",
      "2024-08-19", "$5",      "50%",      "(aside)", "[ref]",   "a/b",      "snake_case"};
  std::mt19937 rng(seed);
  auto pick = [&](size_t k) { return size_t(rng() % k); };
  std::vector<std::string> docs;
  for (int d = 0; d < n; ++d) {
    std::string doc;
    const size_t lines = 1 + pick(5);
    for (size_t l = 0; l < lines; ++l) {
      if (l > 0) doc += '\n';
      if (pick(6) == 0) doc += pick(2) ? "    " : "\t";
      const size_t len = 4 + pick(16);
      for (size_t w = 0; w < len; ++w) {
        std::string word = words[pick(words.size())];
        if (w == 0 && word[0] >= 'a' && word[0] <= 'z') word[0] = char(word[0] - 'a' + 'A');
        if (w > 0) doc += pick(15) == 0 ? "  " : " ";
        doc += word;
        if (w + 1 < len && pick(9) == 0) doc += ",;:"[pick(3)];
      }
      doc += ".!?"[pick(3)];
    }
    docs.push_back(doc);
  }
  return docs;
}

std::string join_paragraphs(const std::vector<std::string>& docs) {
  std::string s;
  for (const auto& d : docs) s += d + "\n\n";
  return s;
}

std::string to_jsonl(const std::vector<std::string>& docs, const std::string& field) {
  std::string s;
  for (size_t i = 0; i < docs.size(); ++i)
    s += nlohmann::json{{"id", i}, {field, docs[i]}}.dump() + "\n";
  return s;
}

struct Shard {
  moe::ShardHeader h;
  std::vector<uint32_t> tokens;
};

Shard read_shard(const fs::path& p) {
  const std::string bytes = slurp(p);
  Shard s;
  s.h = moe::decode_shard_header(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                                 p.string());
  moe::check_shard_size(s.h, bytes.size(), p.string());
  const auto* payload =
      reinterpret_cast<const unsigned char*>(bytes.data()) + moe::kShardHeaderBytes;
  for (uint64_t i = 0; i < s.h.token_count; ++i) {
    uint32_t t = 0;
    for (uint32_t b = 0; b < s.h.token_bytes; ++b)
      t |= uint32_t(payload[i * s.h.token_bytes + b]) << (8 * b);
    s.tokens.push_back(t);
  }
  return s;
}

std::vector<fs::path> shard_files(const fs::path& dir, const std::string& split) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(split + "_", 0) == 0 && e.path().extension() == ".bin") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class DataTools : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("moe_data_" + std::to_string(getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    docs_ = new std::vector<std::string>(make_documents(2500, 7));
    write_file(*dir_ / "corpus.txt", join_paragraphs(*docs_));
    const Result r = run("tokenizer-train --input " + (*dir_ / "corpus.txt").string() +
                         " --vocab-size 400 --max-sentences 20000 --threads 2 --output " +
                         (*dir_ / "tok").string());
    ASSERT_EQ(r.code, 0) << r.out;
    train_out_ = new std::string(r.out);
    sp_ = new sentencepiece::SentencePieceProcessor();
    ASSERT_TRUE(sp_->Load((*dir_ / "tok.model").string()).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete docs_;
    delete train_out_;
    delete sp_;
  }

  static fs::path path(const std::string& name) { return *dir_ / name; }
  static std::string model() { return path("tok.model").string(); }
  static Result prepare(const std::string& inputs, const std::string& out,
                        const std::string& extra = "") {
    return run("prepare --tokenizer " + model() + " --input " + inputs + " --output " +
               path(out).string() + " " + extra);
  }

  // Every document of both splits, back in input order via the split rule
  // applied to the documents `expected` there (a document that is not there,
  // or in the other split, shows as a difference from `expected`).
  static std::vector<std::string> decode_all(const fs::path& out, uint64_t seed, double frac,
                                             const std::vector<std::string>& expected) {
    std::vector<std::vector<std::string>> split(2);
    for (int s = 0; s < 2; ++s) {
      for (const auto& f : shard_files(out, s ? "val" : "train")) {
        const Shard sh = read_shard(f);
        EXPECT_EQ(sh.h.vocab_size, 400u);
        EXPECT_EQ(sh.h.token_bytes, 2u);
        EXPECT_EQ(sh.h.eos_id, 2);
        EXPECT_EQ(sh.h.bos_id, 1);
        EXPECT_EQ(sh.h.pad_id, 3);
        EXPECT_EQ(sh.h.tokenizer_hash, moe::hash_file(model()));
        EXPECT_FALSE(sh.tokens.empty());
        EXPECT_EQ(sh.tokens.back(), 2u) << f << ": a shard ends with a whole document";
        std::vector<int> ids;
        uint64_t docs = 0;
        for (uint32_t t : sh.tokens) {
          if (t == 2u) {
            std::string text;
            EXPECT_TRUE(sp_->Decode(ids, &text).ok());
            split[s].push_back(text);
            ids.clear();
            ++docs;
          } else {
            ids.push_back(int(t));
          }
        }
        EXPECT_EQ(docs, sh.h.doc_count) << f;
      }
    }
    std::vector<std::string> all;
    size_t at[2] = {0, 0};
    const size_t n = split[0].size() + split[1].size();
    EXPECT_EQ(n, expected.size());
    for (size_t i = 0; i < std::min(n, expected.size()); ++i) {
      const uint64_t h = moe::data::document_hash(expected[i]);
      const int s = moe::data::is_val_document(seed, h, frac) ? 1 : 0;
      if (at[s] >= split[s].size()) {
        ADD_FAILURE() << "split rule disagrees with the shards at document " << i;
        return all;
      }
      all.push_back(split[s][at[s]++]);
    }
    return all;
  }

  static std::vector<std::string> shard_bytes(const fs::path& out) {
    std::vector<std::string> b;
    for (const char* s : {"train", "val"})
      for (const auto& f : shard_files(out, s)) b.push_back(f.filename().string() + ":" + slurp(f));
    return b;
  }

  static nlohmann::json summary(const std::string& out) {
    return nlohmann::json::parse(slurp(path(out) / "summary.json"));
  }

  static fs::path* dir_;
  static std::vector<std::string>* docs_;
  static std::string* train_out_;
  static sentencepiece::SentencePieceProcessor* sp_;
};

fs::path* DataTools::dir_ = nullptr;
std::vector<std::string>* DataTools::docs_ = nullptr;
std::string* DataTools::train_out_ = nullptr;
sentencepiece::SentencePieceProcessor* DataTools::sp_ = nullptr;

TEST_F(DataTools, TokenizerModel) {
  EXPECT_EQ(sp_->GetPieceSize(), 400);
  EXPECT_EQ(sp_->unk_id(), 0);
  EXPECT_EQ(sp_->bos_id(), 1);
  EXPECT_EQ(sp_->eos_id(), 2);
  EXPECT_EQ(sp_->pad_id(), 3);
  EXPECT_TRUE(sp_->IsByte(sp_->PieceToId("<0x0A>")));  // byte fallback: newlines, rare chars
  EXPECT_TRUE(fs::exists(path("tok.vocab")));
  EXPECT_NE(train_out_->find("vocab 400"), std::string::npos) << *train_out_;
  EXPECT_NE(train_out_->find("sentences"), std::string::npos) << *train_out_;
}

TEST_F(DataTools, TokenizerSampleIsSeededAndFormatsAgree) {
  auto train = [&](const std::string& input, const std::string& name, const std::string& extra) {
    const Result r = run("tokenizer-train --input " + input + " --vocab-size 350 --threads 2 " +
                         extra + " --output " + path(name).string());
    EXPECT_EQ(r.code, 0) << r.out;
    return slurp(path(name + ".vocab"));
  };
  // Sampling 2000 of ~7500 lines: the seed alone decides the sample.
  const std::string in = path("corpus.txt").string();
  const std::string a = train(in, "s1", "--max-sentences 2000 --seed 1");
  EXPECT_EQ(a, train(in, "s1b", "--max-sentences 2000 --seed 1"));
  EXPECT_NE(a, train(in, "s2", "--max-sentences 2000 --seed 2"));
  // Every line of a gzipped JSONL copy is the same training text.
  write_gzip(path("train.jsonl.gz"), to_jsonl(*docs_, "text"));
  EXPECT_EQ(train(in, "all_txt", ""), train(path("train.jsonl.gz").string(), "all_jsonl", ""));
}

TEST_F(DataTools, RoundTripExactWithEosAndSummary) {
  const Result r = prepare(path("corpus.txt").string(), "rt",
                           "--val-fraction 0.1 --seed 5 --shard-tokens 30000 --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("MB/s"), std::string::npos) << r.out;
  EXPECT_EQ(decode_all(path("rt"), 5, 0.1, *docs_), *docs_);
  EXPECT_FALSE(fs::exists(path("rt") / ".moe-data.partial"));

  const auto s = summary("rt");
  const auto train = shard_files(path("rt"), "train");
  EXPECT_GT(train.size(), 2u);  // 30000-token shards
  EXPECT_EQ(s["train"]["shards"].size(), train.size());
  EXPECT_EQ(s["documents"].get<size_t>(), docs_->size());
  const uint64_t val_docs = s["val"]["documents"];
  EXPECT_GT(val_docs, 150u);  // ~10% of 2500
  EXPECT_LT(val_docs, 350u);
  uint64_t tokens = 0;
  for (const auto& f : train) {
    const Shard sh = read_shard(f);
    EXPECT_LE(sh.h.token_count, 30000u);
    tokens += sh.h.token_count;
  }
  EXPECT_EQ(s["train"]["tokens"].get<uint64_t>(), tokens);
  EXPECT_EQ(s["tokenizer"]["vocab_size"], 400);
  EXPECT_EQ(s["tokenizer"]["eos_id"], 2);
  EXPECT_EQ(s["skipped_bad_lines"], 0);
  EXPECT_EQ(s["input_bytes"].get<uint64_t>(), fs::file_size(path("corpus.txt")));
  EXPECT_GT(s["mb_per_s"].get<double>(), 0);
}

TEST_F(DataTools, SplitAndBytesIndependentOfThreads) {
  const std::string in = path("corpus.txt").string();
  ASSERT_EQ(prepare(in, "t1", "--val-fraction 0.2 --threads 1").code, 0);
  ASSERT_EQ(prepare(in, "t3", "--val-fraction 0.2 --threads 3").code, 0);
  ASSERT_EQ(prepare(in, "t3b", "--val-fraction 0.2 --threads 3").code, 0);
  ASSERT_EQ(prepare(in, "seed9", "--val-fraction 0.2 --seed 9").code, 0);
  const auto one = shard_bytes(path("t1"));
  EXPECT_EQ(one.size(), 2u);
  EXPECT_EQ(one, shard_bytes(path("t3")));
  EXPECT_EQ(one, shard_bytes(path("t3b")));
  EXPECT_NE(one, shard_bytes(path("seed9")));  // another seed, another split
  EXPECT_EQ(decode_all(path("seed9"), 9, 0.2, *docs_), *docs_);
}

// Validation is drawn from every file, by each document's content: a corpus
// of two kinds (dictionary-like paragraphs, then code-like JSONL documents)
// gives validation documents of both kinds, the same ones for the same seed
// whatever the order of the input files, other ones for another seed.
TEST_F(DataTools, ValidationComesFromEveryFileByContent) {
  const std::vector<std::string> prose(docs_->begin(), docs_->begin() + 600);
  std::vector<std::string> code;
  for (int i = 0; i < 400; ++i)
    code.push_back("def f" + std::to_string(i) + "(x):\n    return x * " + std::to_string(i % 7) +
                   " + " + std::to_string(i));
  write_file(path("kind_a.txt"), join_paragraphs(prose));
  write_file(path("kind_b.jsonl"), to_jsonl(code, "text"));
  const std::string a = path("kind_a.txt").string(), b = path("kind_b.jsonl").string();
  const std::string opts = "--val-fraction 0.05 --threads 2 --seed ";
  ASSERT_EQ(prepare(a + " " + b, "kinds_ab", opts + "3").code, 0);
  ASSERT_EQ(prepare(a + " " + b, "kinds_ab2", opts + "3").code, 0);
  ASSERT_EQ(prepare(b + " " + a, "kinds_ba", opts + "3").code, 0);
  ASSERT_EQ(prepare(a + " " + b, "kinds_seed4", opts + "4").code, 0);
  // The same documents, shuffled within and across files.
  std::vector<std::string> mixed = prose;
  mixed.insert(mixed.end(), code.begin(), code.end());
  std::shuffle(mixed.begin(), mixed.end(), std::mt19937(7));
  const std::vector<std::string> mixed_a(mixed.begin(), mixed.begin() + 500),
      mixed_b(mixed.begin() + 500, mixed.end());
  write_file(path("mixed_a.jsonl"), to_jsonl(mixed_a, "text"));
  write_file(path("mixed_b.jsonl"), to_jsonl(mixed_b, "text"));
  ASSERT_EQ(prepare(path("mixed_b.jsonl").string() + " " + path("mixed_a.jsonl").string(),
                    "kinds_mixed", opts + "3").code,
            0);

  // The validation documents, decoded, as a sorted list.
  auto val_docs = [&](const std::string& out) {
    std::vector<std::string> docs;
    std::vector<int> ids;
    for (const auto& f : shard_files(path(out), "val"))
      for (uint32_t t : read_shard(f).tokens) {
        if (t != 2u) {
          ids.push_back(int(t));
          continue;
        }
        std::string text;
        EXPECT_TRUE(sp_->Decode(ids, &text).ok());
        docs.push_back(text);
        ids.clear();
      }
    std::sort(docs.begin(), docs.end());
    return docs;
  };
  const auto val = val_docs("kinds_ab");
  // Both kinds are there, each about 5% of its file (30 of 600, 20 of 400).
  const auto is_code = [](const std::string& d) { return d.rfind("def f", 0) == 0; };
  const auto n_code = size_t(std::count_if(val.begin(), val.end(), is_code));
  EXPECT_GE(n_code, 8u);
  EXPECT_LE(n_code, 35u);
  EXPECT_GE(val.size() - n_code, 14u);
  EXPECT_LE(val.size() - n_code, 50u);
  // Exactly the documents the rule picks, by content.
  std::vector<std::string> want;
  for (const auto& docs : {prose, code})
    for (const auto& d : docs)
      if (moe::data::is_val_document(3, moe::data::document_hash(d), 0.05)) want.push_back(d);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(val, want);
  // summary.json counts each file's documents and validation documents.
  const auto inputs = summary("kinds_ab")["inputs"];
  ASSERT_EQ(inputs.size(), 2u);
  EXPECT_EQ(inputs[0]["documents"], 600);
  EXPECT_EQ(inputs[1]["documents"], 400);
  EXPECT_EQ(inputs[0]["val_documents"].get<size_t>(), val.size() - n_code);
  EXPECT_EQ(inputs[1]["val_documents"].get<size_t>(), n_code);

  EXPECT_EQ(shard_bytes(path("kinds_ab")), shard_bytes(path("kinds_ab2")));  // deterministic
  EXPECT_EQ(val_docs("kinds_ba"), val);  // the files' order does not choose the documents
  EXPECT_EQ(val_docs("kinds_mixed"), val);  // nor the documents' order
  EXPECT_NE(val_docs("kinds_seed4"), val);
}

// Copies of one text share its hash, so they land in the same split: a file
// of 10 copies with --val-fraction 0.5 gives all or none. A seed that gives
// none (while the other file gives some) gets a warning naming the file.
TEST_F(DataTools, FileWithNoValidationDocumentIsNamed) {
  const std::string same = "the same entry, copied";
  std::vector<std::string> distinct;
  for (int i = 0; i < 40; ++i) distinct.push_back("entry number " + std::to_string(i));
  write_file(path("copies.txt"), join_paragraphs(std::vector<std::string>(10, same)));
  write_file(path("distinct.txt"), join_paragraphs(distinct));
  auto is_val = [](uint64_t seed, const std::string& d) {
    return moe::data::is_val_document(seed, moe::data::document_hash(d), 0.5);
  };
  uint64_t seed = 1;
  while (is_val(seed, same) ||
         std::none_of(distinct.begin(), distinct.end(), [&](auto& d) { return is_val(seed, d); }))
    ++seed;
  const Result r = prepare(path("copies.txt").string() + " " + path("distinct.txt").string(),
                           "copies", "--val-fraction 0.5 --seed " + std::to_string(seed));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("copies.txt: none of its 10 documents fell into the validation split"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("distinct.txt: none"), std::string::npos) << r.out;
  EXPECT_EQ(summary("copies")["inputs"][0]["val_documents"], 0);
  // A seed that sends the copies to validation sends all 10.
  ++seed;
  while (!is_val(seed, same)) ++seed;
  ASSERT_EQ(prepare(path("copies.txt").string() + " " + path("distinct.txt").string(), "copies2",
                    "--val-fraction 0.5 --seed " + std::to_string(seed))
                .code,
            0);
  EXPECT_EQ(summary("copies2")["inputs"][0]["val_documents"], 10);
}

TEST_F(DataTools, GzipAndJsonlMatchPlainText) {
  write_gzip(path("corpus.txt.gz"), join_paragraphs(*docs_));
  write_file(path("corpus.jsonl"), to_jsonl(*docs_, "text"));
  write_gzip(path("corpus.jsonl.gz"), to_jsonl(*docs_, "text"));
  ASSERT_EQ(prepare(path("corpus.txt").string(), "plain").code, 0);
  ASSERT_EQ(prepare(path("corpus.txt.gz").string(), "gz").code, 0);
  ASSERT_EQ(prepare(path("corpus.jsonl").string(), "jsonl").code, 0);
  ASSERT_EQ(prepare(path("corpus.jsonl.gz").string(), "jsonlgz").code, 0);
  const auto plain = shard_bytes(path("plain"));
  EXPECT_EQ(plain, shard_bytes(path("gz")));
  EXPECT_EQ(plain, shard_bytes(path("jsonl")));
  EXPECT_EQ(plain, shard_bytes(path("jsonlgz")));
  EXPECT_EQ(summary("gz")["input_bytes"].get<uint64_t>(), fs::file_size(path("corpus.txt.gz")));
}

TEST_F(DataTools, JsonlKeepsAnyTextExactly) {
  // JSONL documents may hold what paragraphs cannot: blank lines, CRLF,
  // leading and trailing whitespace.
  std::vector<std::string> docs = make_documents(300, 11);
  docs[0] = "  two leading spaces\n\nthen a blank line\r\nand CRLF  \n";
  docs[1] = "\n\n\tstarts with newlines";
  docs[2] = std::string(20000, 'a') + " one long line";
  write_file(path("field.jsonl"), to_jsonl(docs, "content") + "\n   \n");  // blank lines skipped
  const Result r =
      prepare(path("field.jsonl").string(), "field", "--text-field content --val-fraction 0");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(decode_all(path("field"), 1234, 0, docs), docs);
  EXPECT_TRUE(shard_files(path("field"), "val").empty());
}

TEST_F(DataTools, WholeFileDocumentsAndDirectories) {
  const fs::path d = path("tree");
  fs::create_directories(d / "sub" / "deeper");
  fs::create_directories(d / ".hidden");
  const std::vector<std::string> docs = {"first file\n\nwith a blank line\n",
                                         "second file, no final newline"};
  write_file(d / "b.txt", docs[1]);
  write_file(d / "sub" / "deeper" / "a.txt", docs[0]);
  write_file(d / "notes.csv", "not a corpus file\n");
  write_file(d / ".hidden" / "c.txt", "hidden\n");
  write_file(d / "sub" / ".d.txt", "hidden\n");
  // Sorted by path: b.txt, sub/deeper/a.txt.
  const Result r = prepare(d.string(), "whole", "--txt-docs file --val-fraction 0");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<std::string> whole = {docs[1], docs[0]};
  EXPECT_EQ(decode_all(path("whole"), 1234, 0, whole), whole);
  EXPECT_EQ(summary("whole")["inputs"].size(), 2u);
  // A glob of the same files, paragraph documents.
  ASSERT_EQ(
      prepare("'" + (d / "*" / "*" / "*.txt").string() + "'", "glob", "--val-fraction 0").code, 0);
  const std::vector<std::string> paragraphs = {"first file", "with a blank line"};
  EXPECT_EQ(decode_all(path("glob"), 1234, 0, paragraphs), paragraphs);
}

TEST_F(DataTools, BadJsonlLineNamesFileAndLine) {
  const fs::path f = path("bad.jsonl");
  write_file(
      f,
      "{\"text\": \"fine\"}\n{\"text\": \"also fine\"}\n{not json\n{\"title\": \"no text\"}\n"
      "{\"text\": 3}\n{\"text\": \"last\"}\n");
  expect_one_line_error(prepare(f.string(), "bad"), f.string() + ":3:");
  EXPECT_FALSE(fs::exists(path("bad")));  // nothing left behind
  expect_one_line_error(run("tokenizer-train --input " + f.string() +
                            " --vocab-size 300 --output " + path("badtok").string()),
                        f.string() + ":3:");

  const Result r = prepare(f.string(), "skipped", "--skip-bad-lines --val-fraction 0");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;  // one warning + summary
  EXPECT_NE(r.out.find("skipped 3 bad JSONL lines"), std::string::npos) << r.out;
  const auto s = summary("skipped");
  EXPECT_EQ(s["skipped_bad_lines"], 3);
  EXPECT_NE(s["first_bad_line"].get<std::string>().find("bad.jsonl:3:"), std::string::npos);
  EXPECT_EQ(s["documents"], 3);
  const std::vector<std::string> kept = {"fine", "also fine", "last"};
  EXPECT_EQ(decode_all(path("skipped"), 1234, 0, kept), kept);
}

TEST_F(DataTools, InputErrorsAreOneLine) {
  const std::string out = " --output " + path("err").string();
  const std::string tok = "prepare --tokenizer " + model();
  expect_one_line_error(run(tok + " --input /nonexistent/x.txt" + out), "/nonexistent/x.txt");
  expect_one_line_error(run(tok + " --input '" + path("none*.txt").string() + "'" + out),
                        "matches no file");
  write_file(path("empty.txt"), "\n  \n\n");
  expect_one_line_error(run(tok + " --input " + path("empty.txt").string() + out), "no documents");
  expect_one_line_error(run("tokenizer-train --input " + path("empty.txt").string() +
                            " --vocab-size 300 --output " + path("e").string()),
                        "no text");
  write_file(path("fake.model"), "not a model");
  expect_one_line_error(run("prepare --tokenizer " + path("fake.model").string() + " --input " +
                            path("corpus.txt").string() + out),
                        "fake.model");
  // Corrupt gzip: truncated, and a .gz that is not gzip at all.
  write_gzip(path("cut.txt.gz"), join_paragraphs(*docs_));
  fs::resize_file(path("cut.txt.gz"), fs::file_size(path("cut.txt.gz")) / 2);
  expect_one_line_error(run(tok + " --input " + path("cut.txt.gz").string() + out), "cut.txt.gz");
  write_file(path("plain.txt.gz"), "plain text\n");
  expect_one_line_error(run(tok + " --input " + path("plain.txt.gz").string() + out),
                        "plain.txt.gz");
  // Command line.
  expect_one_line_error(run(tok + " --input " + path("corpus.txt").string() + out + " --bogus"),
                        "--bogus");
  expect_one_line_error(run(tok + " --input " + path("corpus.txt").string() + " --output"),
                        "--output");
  expect_one_line_error(run("prepare --input " + path("corpus.txt").string() + out), "--tokenizer");
  expect_one_line_error(
      run(tok + " --input " + path("corpus.txt").string() + out + " --val-fraction 2"),
      "--val-fraction");
  expect_one_line_error(run("tokenizer-train --input " + path("corpus.txt").string() +
                            " --vocab-size 10 --output " + path("small").string()),
                        "vocab");
  expect_one_line_error(run("frobnicate"), "frobnicate");
  EXPECT_FALSE(fs::exists(path("err")));
}

TEST_F(DataTools, ExistingOutputNeedsForce) {
  const std::string in = path("corpus.txt").string();
  ASSERT_EQ(prepare(in, "again", "--val-fraction 0.1").code, 0);
  const auto before = shard_bytes(path("again"));
  const std::string summary_before = slurp(path("again") / "summary.json");
  expect_one_line_error(prepare(in, "again", "--val-fraction 0.3"), path("again").string());
  EXPECT_EQ(shard_bytes(path("again")), before);  // nothing lost
  EXPECT_EQ(slurp(path("again") / "summary.json"), summary_before);

  // --force replaces the earlier run, stale shards included.
  write_file(path("again") / "train_00099.bin", "stale");
  ASSERT_EQ(prepare(in, "again", "--val-fraction 0.3 --force").code, 0);
  EXPECT_FALSE(fs::exists(path("again") / "train_00099.bin"));
  EXPECT_NE(shard_bytes(path("again")), before);
  EXPECT_EQ(decode_all(path("again"), 1234, 0.3, *docs_), *docs_);
}

// Peak RSS (KB) of moe-data on `args`, which must succeed.
long child_peak_rss_kb(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(kBin.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    FILE* null = std::fopen("/dev/null", "w");
    if (null) {
      dup2(fileno(null), 1);
      dup2(fileno(null), 2);
    }
    execv(kBin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  if (wait4(pid, &status, 0, &ru) != pid) return -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  return ru.ru_maxrss;
}

TEST_F(DataTools, InputLargerThanMemoryStreams) {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's shadow memory and quarantine swamp the measurement;
  // the bound is checked by the normal build.
  GTEST_SKIP() << "peak RSS is measured in the non-sanitized build";
#endif
  // 64 MB of paragraphs; the encoder keeps at most 2 x threads + 2 batches of
  // 256 KB in flight, so peak RSS stays near the program's own size.
  const fs::path big = path("big.txt");
  {
    std::ofstream f(big, std::ios::binary);
    const std::string block = join_paragraphs(*docs_);
    for (uint64_t written = 0; written < (64ull << 20); written += block.size()) f << block;
  }
  const long kb = child_peak_rss_kb({"prepare", "--tokenizer", model(), "--input", big.string(),
                                     "--output", path("big").string(), "--threads", "2"});
  ASSERT_GT(kb, 0);
  std::printf("peak RSS %.1f MB for a %.1f MB input\n", kb / 1024.0,
              fs::file_size(big) / 1048576.0);
  EXPECT_LT(kb, 32 * 1024) << "memory must not grow with the input";
  const auto s = summary("big");
  EXPECT_EQ(s["input_bytes"].get<uint64_t>(), fs::file_size(big));
  EXPECT_GT(s["documents"].get<uint64_t>(), 100 * docs_->size());
  fs::remove(big);
}

}  // namespace
