// Fuzz target: moe-data's corpus readers. The first input byte picks the
// input kind (text or JSONL, plain or gzip; paragraph or whole-file
// documents); the rest is the file. Every record is read, JSONL lines parsed,
// and the tokenizer-training sentence reader run. A bad file must be a
// DataError naming it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data_tools/inputs.h"
#include "data_tools/records.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const char* const kNames[] = {"a.txt", "a.jsonl", "a.txt.gz", "a.jsonl.gz"};
  const uint8_t kind = data[0];
  const std::string path = moe::fuzz::write_file(kNames[kind % 4], data + 1, size - 1);
  const std::vector<moe::data::InputFile> files = {moe::data::classify_input(path)};
  try {
    moe::data::RecordReader records(files, (kind & 4) != 0);
    moe::data::RawRecord r;
    std::string text, why;
    while (records.next(&r))
      if (r.json) moe::data::jsonl_text(r.text, "text", &text, &why);
  } catch (const moe::DataError&) {
  }
  try {
    moe::data::SentenceReader sentences(files, "text", (kind & 8) != 0);
    std::string s;
    while (sentences.next(&s)) {
    }
  } catch (const moe::DataError&) {
  }
  return 0;
}
