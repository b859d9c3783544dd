// moe-data: the corpus tool. Trains a SentencePiece tokenizer and turns text
// corpora into the token shards moe-train reads (docs/data.md).
//   moe-data tokenizer-train --input PATH... --vocab-size N --output PREFIX
//   moe-data prepare --tokenizer M.model --input PATH... --output DIR
#include <fmt/format.h>

#include <string>

#include "apps/cli.h"
#include "apps/common.h"
#include "data_tools/prepare.h"
#include "data_tools/tokenizer_train.h"

namespace {

constexpr const char* kInputs =
    "files, directories (recursive) and globs: .txt, .jsonl, optionally .gz (repeatable)";

// The options of `moe-data tokenizer-train`, written into o by parsing.
CLI::App* add_tokenizer_train(CLI::App& app, moe::data::TrainOptions& o) {
  CLI::App* c = app.add_subcommand(
      "tokenizer-train", "train a SentencePiece BPE tokenizer on corpus inputs");
  c->add_option("--input", o.inputs, kInputs)->type_name("PATH")->required();
  c->add_option("--vocab-size", o.vocab_size,
                "pieces in the model (incl. 4 specials and 256 byte pieces)")
      ->type_name("N")
      ->required()
      ->check(moe::cli::integer_in(8, int64_t(1) << 30));
  c->add_option("--output", o.output, "writes PREFIX.model and PREFIX.vocab")
      ->type_name("PREFIX")
      ->required();
  c->add_option("--max-sentences", o.max_sentences,
                fmt::format("lines sampled uniformly from the corpus to train on ({})",
                            o.max_sentences))
      ->type_name("N")
      ->check(moe::cli::integer_in(1, int64_t(1) << 40));
  c->add_option("--seed", o.seed, fmt::format("seed of that sample ({})", o.seed))
      ->type_name("S")
      ->check(moe::cli::integer_at_least(0));
  c->add_option("--threads", o.threads, "trainer threads (default: all cores)")
      ->type_name("T")
      ->check(moe::cli::integer_in(0, 128));
  c->add_option("--character-coverage", o.character_coverage,
                fmt::format("share of characters kept as pieces; rarer ones become UTF-8 byte "
                            "pieces ({}; 1.0 keeps every character)",
                            o.character_coverage))
      ->type_name("C")
      ->check(moe::cli::number_in(0.5, 1.0));
  c->add_option("--text-field", o.text_field,
                fmt::format("JSONL field holding the text ({})", o.text_field))
      ->type_name("NAME");
  c->add_flag("--skip-bad-lines", o.skip_bad_lines,
              "skip and count bad JSONL lines instead of failing");
  return c;
}

// The options of `moe-data prepare`; --txt-docs lands in txt_docs.
CLI::App* add_prepare(CLI::App& app, moe::data::PrepareOptions& o, std::string& txt_docs) {
  CLI::App* c =
      app.add_subcommand("prepare", "tokenize corpus inputs into token shards for moe-train");
  c->add_option("--tokenizer", o.tokenizer, "SentencePiece model (e.g. from tokenizer-train)")
      ->type_name("M.model")
      ->required();
  c->add_option("--input", o.inputs, kInputs)->type_name("PATH")->required();
  c->add_option("--output", o.output,
                "writes DIR/train_NNNNN.bin, DIR/val_NNNNN.bin, DIR/summary.json")
      ->type_name("DIR")
      ->required();
  c->add_option("--val-fraction", o.val_fraction,
                fmt::format("share of documents for validation, below 1 ({})", o.val_fraction))
      ->type_name("F")
      ->check(moe::cli::number_in(0.0, 1.0));
  c->add_option("--seed", o.seed, fmt::format("seed of the train/val split ({})", o.seed))
      ->type_name("S")
      ->check(moe::cli::integer_at_least(0));
  c->add_option("--threads", o.threads, "encoder threads (default: all cores)")
      ->type_name("T")
      ->check(moe::cli::integer_in(0, 1024));
  c->add_option("--shard-tokens", o.shard_tokens,
                fmt::format("tokens per shard at most ({})", o.shard_tokens))
      ->type_name("N")
      ->check(moe::cli::integer_at_least(1));
  c->add_option("--text-field", o.text_field,
                fmt::format("JSONL field holding the document ({})", o.text_field))
      ->type_name("NAME");
  c->add_option("--txt-docs", txt_docs,
                "text documents: paragraph (blank-line separated, the default) or file")
      ->type_name("MODE")
      ->check(CLI::IsMember({"paragraph", "file"}));
  c->add_flag("--skip-bad-lines", o.skip_bad_lines,
              "skip and count bad JSONL lines instead of failing");
  c->add_flag("--force", o.force, "replace the shards of an earlier run in DIR");
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  return moe::run_main("moe-data", [&]() {
    CLI::App app{"The corpus tool: trains a SentencePiece tokenizer and turns text corpora into "
                 "the token shards moe-train reads (docs/data.md)."};
    moe::cli::configure(app, "moe-data");
    app.require_subcommand(1);
    moe::data::TrainOptions train;
    moe::data::PrepareOptions prep;
    std::string txt_docs = "paragraph";
    CLI::App* train_cmd = add_tokenizer_train(app, train);
    CLI::App* prepare_cmd = add_prepare(app, prep, txt_docs);
    app.footer("moe-data COMMAND --help lists the options of COMMAND.\n");
    // Name the command in the error: CLI11 would only say one is required.
    const std::string first = argc > 1 ? argv[1] : "";
    if (first.empty())
      throw moe::InputError("missing command: tokenizer-train or prepare (see moe-data --help)");
    if (first[0] != '-' && first != train_cmd->get_name() && first != prepare_cmd->get_name())
      throw moe::InputError("unknown command '" + first +
                            "': expected tokenizer-train or prepare (see moe-data --help)");
    if (!moe::cli::parse(app, argc, argv)) return 0;
    if (train_cmd->parsed()) {
      moe::data::tokenizer_train(train);
    } else if (prepare_cmd->parsed()) {
      if (prep.val_fraction >= 1.0)
        throw moe::InputError("prepare: --val-fraction must be below 1 (no training data otherwise)");
      prep.whole_file_docs = txt_docs == "file";
      moe::data::prepare(prep);
    }
    return 0;
  });
}
