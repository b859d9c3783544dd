// moe-data: the corpus tool. Trains a SentencePiece tokenizer and turns text
// corpora into the token shards moe-train reads (docs/data.md).
//   moe-data tokenizer-train --input PATH... --vocab-size N --output PREFIX
//   moe-data prepare --tokenizer M.model --input PATH... --output DIR
#include <cstdio>
#include <cstring>
#include <string>

#include "apps/common.h"
#include "data_tools/args.h"
#include "data_tools/prepare.h"
#include "data_tools/tokenizer_train.h"

namespace {

using moe::data::Args;

constexpr const char* kUsage =
    "usage: moe-data COMMAND [options]   (moe-data COMMAND --help for its options)\n"
    "  tokenizer-train   train a SentencePiece BPE tokenizer on corpus inputs\n"
    "  prepare           tokenize corpus inputs into token shards for moe-train\n"
    "  --help, --version\n"
    "Inputs: .txt, .jsonl, .txt.gz, .jsonl.gz files, directories (recursive) and globs.\n";

constexpr const char* kTrainUsage =
    "usage: moe-data tokenizer-train --input PATH... --vocab-size N --output PREFIX [options]\n"
    "  --input PATH...        files, directories, globs (.txt .jsonl, optionally .gz)\n"
    "  --vocab-size N         pieces in the model (incl. 4 specials and 256 byte pieces)\n"
    "  --output PREFIX        writes PREFIX.model and PREFIX.vocab\n"
    "  --max-sentences N      lines sampled uniformly from the corpus to train on (1000000)\n"
    "  --seed S               seed of that sample (1234)\n"
    "  --threads T            trainer threads (all cores)\n"
    "  --character-coverage C share of characters kept as pieces; rarer ones become\n"
    "                         UTF-8 byte pieces (0.9995; 1.0 keeps every character)\n"
    "  --text-field NAME      JSONL field holding the text (text)\n"
    "  --skip-bad-lines       skip and count bad JSONL lines instead of failing\n";

constexpr const char* kPrepareUsage =
    "usage: moe-data prepare --tokenizer M.model --input PATH... --output DIR [options]\n"
    "  --tokenizer M.model    SentencePiece model (e.g. from tokenizer-train)\n"
    "  --input PATH...        files, directories, globs (.txt .jsonl, optionally .gz)\n"
    "  --output DIR           writes DIR/train_NNNNN.bin, DIR/val_NNNNN.bin, DIR/summary.json\n"
    "  --val-fraction F       share of documents for validation (0.005)\n"
    "  --seed S               seed of the train/val split (1234)\n"
    "  --threads T            encoder threads (all cores)\n"
    "  --shard-tokens N       tokens per shard at most (100000000)\n"
    "  --text-field NAME      JSONL field holding the document (text)\n"
    "  --txt-docs MODE        text documents: paragraph (blank-line separated) or file\n"
    "  --skip-bad-lines       skip and count bad JSONL lines instead of failing\n"
    "  --force                replace the shards of an earlier run in DIR\n";

int tokenizer_train(int argc, char** argv) {
  const Args a("tokenizer-train",
               {{"input", Args::Kind::List},
                {"vocab-size", Args::Kind::Value},
                {"output", Args::Kind::Value},
                {"max-sentences", Args::Kind::Value},
                {"seed", Args::Kind::Value},
                {"threads", Args::Kind::Value},
                {"character-coverage", Args::Kind::Value},
                {"text-field", Args::Kind::Value},
                {"skip-bad-lines", Args::Kind::Flag}},
               argc, argv, 2);
  if (a.help()) {
    std::fputs(kTrainUsage, stdout);
    return 0;
  }
  moe::data::TrainOptions o;
  o.inputs = a.list("input");
  if (!a.has("vocab-size")) a.required("vocab-size");
  o.vocab_size = a.integer("vocab-size", 0, 8, 1 << 30);
  o.output = a.required("output");
  o.max_sentences = a.integer("max-sentences", o.max_sentences, 1, int64_t(1) << 40);
  o.seed = uint64_t(a.integer("seed", int64_t(o.seed), 0, INT64_MAX));
  o.threads = int(a.integer("threads", 0, 0, 128));
  o.character_coverage = a.real("character-coverage", o.character_coverage, 0.5, 1.0);
  o.text_field = a.str("text-field", o.text_field);
  o.skip_bad_lines = a.flag("skip-bad-lines");
  moe::data::tokenizer_train(o);
  return 0;
}

int prepare(int argc, char** argv) {
  const Args a("prepare",
               {{"tokenizer", Args::Kind::Value},
                {"input", Args::Kind::List},
                {"output", Args::Kind::Value},
                {"val-fraction", Args::Kind::Value},
                {"seed", Args::Kind::Value},
                {"threads", Args::Kind::Value},
                {"shard-tokens", Args::Kind::Value},
                {"text-field", Args::Kind::Value},
                {"txt-docs", Args::Kind::Value},
                {"skip-bad-lines", Args::Kind::Flag},
                {"force", Args::Kind::Flag}},
               argc, argv, 2);
  if (a.help()) {
    std::fputs(kPrepareUsage, stdout);
    return 0;
  }
  moe::data::PrepareOptions o;
  o.tokenizer = a.required("tokenizer");
  o.inputs = a.list("input");
  o.output = a.required("output");
  o.val_fraction = a.real("val-fraction", o.val_fraction, 0.0, 1.0);
  if (o.val_fraction >= 1.0)
    throw moe::InputError("prepare: --val-fraction must be below 1 (no training data otherwise)");
  o.seed = uint64_t(a.integer("seed", int64_t(o.seed), 0, INT64_MAX));
  o.threads = int(a.integer("threads", 0, 0, 1024));
  o.shard_tokens = uint64_t(a.integer("shard-tokens", int64_t(o.shard_tokens), 1, INT64_MAX));
  o.text_field = a.str("text-field", o.text_field);
  const std::string docs = a.str("txt-docs", "paragraph");
  if (docs != "paragraph" && docs != "file")
    throw moe::InputError("prepare: --txt-docs expects paragraph or file, got '" + docs + "'");
  o.whole_file_docs = docs == "file";
  o.skip_bad_lines = a.flag("skip-bad-lines");
  o.force = a.flag("force");
  moe::data::prepare(o);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return moe::run_main("moe-data", [&]() {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (cmd == "--version") {
      std::printf("moe-data %s\n", MOE_VERSION);
      return 0;
    }
    if (cmd == "tokenizer-train") return tokenizer_train(argc, argv);
    if (cmd == "prepare") return prepare(argc, argv);
    if (cmd.empty())
      throw moe::InputError("missing command: tokenizer-train or prepare (see --help)");
    throw moe::InputError("unknown command '" + cmd +
                          "': expected tokenizer-train or prepare (see --help)");
  });
}
