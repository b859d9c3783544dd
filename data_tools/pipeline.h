// The prepare pipeline: one reader thread cuts the corpus into batches, N
// worker threads encode them, and the caller takes them back strictly in
// reading order, so the output does not depend on the thread count. At most
// `max_in_flight` batches exist at once (read, queued, encoding or waiting
// for their turn), which keeps memory flat for any corpus size.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moe::data {

struct Batch {
  struct Record {
    uint64_t offset = 0;  // into text
    uint64_t size = 0;
    uint32_t file = 0;
    uint64_t line = 0;
    bool json = false;
    // Set by the encoder.
    enum class Status : uint8_t { Ok, Empty, Bad } status = Status::Ok;
    uint64_t tokens = 0;  // including the EOS
    uint64_t hash = 0;    // document_hash of the text (the split rule's key)
    std::string why;      // for Bad
  };
  uint64_t seq = 0;
  std::string text;  // the records' bytes back to back (freed once encoded)
  std::vector<Record> records;
  uint64_t disk_bytes = 0;       // input bytes consumed when this batch was cut
  uint64_t text_bytes = 0;       // document bytes (after decompression, JSON decoding)
  std::vector<uint32_t> tokens;  // each Ok document's tokens, then EOS
  std::exception_ptr error;      // reading or encoding failed here: the stream ends
};

class OrderedPipeline {
 public:
  // produce(batch) fills the next batch and returns false when the input is
  // exhausted (the batch is then dropped); it runs on the reader thread.
  // work(batch) runs on a worker. An exception from either is stored in the
  // batch and rethrown by next() at that batch's turn.
  OrderedPipeline(int workers, size_t max_in_flight, std::function<bool(Batch&)> produce,
                  std::function<void(Batch&)> work);
  ~OrderedPipeline();  // stops and joins the threads (also after an error)
  OrderedPipeline(const OrderedPipeline&) = delete;
  OrderedPipeline& operator=(const OrderedPipeline&) = delete;

  // The next batch in reading order; false at the end of the input.
  bool next(Batch* out);

 private:
  void stop_and_join();
  void reader_loop();
  void worker_loop();

  std::function<bool(Batch&)> produce_;
  std::function<void(Batch&)> work_;
  size_t max_in_flight_;
  std::mutex m_;
  std::condition_variable slot_cv_, work_cv_, done_cv_;
  size_t in_flight_ = 0;
  std::deque<Batch> queue_;
  std::map<uint64_t, Batch> done_;
  uint64_t produced_ = 0, next_seq_ = 0;
  bool input_ended_ = false, stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace moe::data
