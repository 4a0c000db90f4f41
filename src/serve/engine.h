// One model, many clients: requests wait in a bounded first-in first-out queue and one worker
// thread runs them one at a time on the model (a single sequence at a time is what the forward
// pass does; on a CPU the weights' memory traffic is the cost, so requests run back to back).
// A request's text reaches its client token by token; a client that goes away cancels its
// request at the next token, or before it starts; a fault while generating ends that request
// with an error and the worker goes on with the next.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace lsb::serve {

struct EngineOptions {
  int ctx = 0;         // positions of one request, prompt and answer (the model is sized for it once)
  int max_queue = 16;  // requests waiting besides the one running; more are refused (QueueFull)
  int threads = 0;     // compute threads (0: all cores)
};

struct JobSpec {
  std::vector<int> prompt;  // ids, BOS included
  int max_new = 16;
  float temperature = 1.0f, top_p = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;  // stop strings (the text sent never contains them)
  std::vector<int> stop_ids;      // ids that end the answer as EOS does
  bool ignore_eos = false;
  // The client reads the answer as it comes (server-sent events): the worker hands the first
  // piece of text over and waits, up to kFirstHandoff, until the server has written it
  // (Job::delivered) before it computes on.
  bool stream = false;
};

struct JobResult {
  std::string finish_reason;  // "stop" (EOS or a stop string), "length", or "cancelled"
  std::string error;          // non-empty: the request failed (finish_reason is then "")
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0, prompt_tok_per_s = 0, decode_tok_per_s = 0;
  double handoff_seconds = 0;  // streamed: how long the worker waited for its first text to be written
};

class Job {
 public:
  // Waits up to `timeout` for new text or the end; appends the new text to `out`. True once the
  // job has ended: then result() is final and every piece of text has been handed out.
  bool wait(std::chrono::milliseconds timeout, std::string& out);
  // The client has gone: the job ends at its next token, or is skipped if still queued.
  void cancel() { cancel_ = true; }
  bool cancelled() const { return cancel_; }
  // The server has written text to the client (streamed jobs: releases the worker waiting after
  // the first piece).
  void delivered();
  const JobResult& result() const { return result_; }
  const JobSpec& spec() const { return spec_; }

 private:
  friend class Engine;
  void push(const std::string& text);
  void finish(JobResult r);

  JobSpec spec_;
  std::atomic<bool> cancel_{false};
  std::mutex m_;
  std::condition_variable cv_;
  std::string pending_;
  bool done_ = false;
  JobResult result_;
  // The waiter is woken for new text at most once per kWakeEvery (and always at the end): on a
  // machine with as many cores as compute threads, a wake-up per token takes a core from the
  // model's team in the middle of its parallel regions (decode through the server ran at 70 % of
  // lsb bench with 2 threads on 2 cores; 87 % with a wake-up every 10 ms, 95-107 % every 40 ms,
  // bench/serve/speed.mjs). Text waits at most that long: 25 updates a second.
  static constexpr std::chrono::milliseconds kWakeEvery{40};
  std::chrono::steady_clock::time_point last_wake_{};
  // The first token of a streamed answer, though, is what the client waits for after its prompt.
  // With as many compute threads as cores, the model's team went straight on to the next token
  // and the server's thread (and a client on the same machine) waited for the scheduler to give
  // them a core: 2-3 ms, 16 % of a 128-token prompt's time on bookworm-27m at 2 threads
  // (bench/serve/speed.mjs). So the worker waits for the first piece to be written, at most this
  // long (a server thread that never comes back costs the answer no more).
  static constexpr std::chrono::milliseconds kFirstHandoff{5};
  bool first_pushed_ = false, delivered_ = false;
  double handoff_seconds_ = 0;
};

class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Engine {
 public:
  // Starts the worker, which sizes the model for opt.ctx positions first: a --mem-budget that
  // cannot hold them is refused here, with the streamer's message (lsb::Error).
  Engine(LlamaModel& model, const Tokenizer& tok, const EngineOptions& opt);
  ~Engine();  // shutdown(), then joins the worker
  // Refuses new jobs, ends the queued ones as "cancelled" and the running one at its next token.
  void shutdown();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; throws QueueFull when max_queue are already waiting.
  std::shared_ptr<Job> submit(JobSpec spec);
  int ctx() const { return opt_.ctx; }
  int threads() const { return threads_; }

  struct Stats {
    size_t queued = 0;
    bool busy = false;
    uint64_t completed = 0, failed = 0, cancelled = 0, refused = 0;
  };
  Stats stats() const;

  // Called on the worker before each job; an exception it throws is a fault of that request
  // (tests inject faults through it).
  std::function<void(const JobSpec&)> before_job;

 private:
  void run();
  void process(Job& job);

  LlamaModel& model_;
  const Tokenizer& tok_;
  EngineOptions opt_;
  int threads_ = 0;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false, busy_ = false;
  Stats stats_;
  std::thread worker_;
};

}  // namespace lsb::serve
