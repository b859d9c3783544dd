#include "data_tools/pipeline.h"

namespace moe::data {

OrderedPipeline::OrderedPipeline(int workers, size_t max_in_flight,
                                 std::function<bool(Batch&)> produce,
                                 std::function<void(Batch&)> work)
    : produce_(std::move(produce)), work_(std::move(work)), max_in_flight_(max_in_flight) {
  try {
    threads_.emplace_back([this] { reader_loop(); });
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker_loop(); });
  } catch (...) {  // no destructor runs for a throwing constructor: join what started
    stop_and_join();
    throw;
  }
}

OrderedPipeline::~OrderedPipeline() { stop_and_join(); }

void OrderedPipeline::stop_and_join() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;
  }
  slot_cv_.notify_all();
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void OrderedPipeline::reader_loop() {
  for (uint64_t seq = 0;; ++seq) {
    {
      std::unique_lock<std::mutex> lock(m_);
      slot_cv_.wait(lock, [&] { return stopping_ || in_flight_ < max_in_flight_; });
      if (stopping_) return;
      ++in_flight_;
    }
    Batch b;
    b.seq = seq;
    bool more = true;
    try {
      more = produce_(b);
    } catch (...) {
      b.error = std::current_exception();  // delivered at this batch's turn
    }
    std::lock_guard<std::mutex> lock(m_);
    if (!more && !b.error) {
      --in_flight_;
      produced_ = seq;
      input_ended_ = true;
      done_cv_.notify_all();
      return;
    }
    queue_.push_back(std::move(b));
    work_cv_.notify_one();
    if (queue_.back().error) {
      produced_ = seq + 1;
      input_ended_ = true;
      return;
    }
  }
}

void OrderedPipeline::worker_loop() {
  for (;;) {
    Batch b;
    {
      std::unique_lock<std::mutex> lock(m_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      b = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!b.error) {
      try {
        work_(b);
      } catch (...) {
        b.error = std::current_exception();
      }
    }
    std::lock_guard<std::mutex> lock(m_);
    const uint64_t seq = b.seq;
    done_.emplace(seq, std::move(b));
    if (seq == next_seq_) done_cv_.notify_all();
  }
}

bool OrderedPipeline::next(Batch* out) {
  std::unique_lock<std::mutex> lock(m_);
  done_cv_.wait(lock, [&] {
    return done_.count(next_seq_) != 0 || (input_ended_ && next_seq_ >= produced_);
  });
  auto it = done_.find(next_seq_);
  if (it == done_.end()) return false;
  *out = std::move(it->second);
  done_.erase(it);
  ++next_seq_;
  --in_flight_;
  slot_cv_.notify_one();
  lock.unlock();
  if (out->error) std::rethrow_exception(out->error);
  return true;
}

}  // namespace moe::data
