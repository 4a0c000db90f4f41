#include "serve/engine.h"

#include <exception>
#include <future>
#include <new>

#include <fmt/format.h>

#include "base/error.h"
#include "model/generate.h"
#include "runtime/threads.h"
#include "serve/stop_matcher.h"

namespace lsb::serve {

bool Job::wait(std::chrono::milliseconds timeout, std::string& out) {
  std::unique_lock<std::mutex> lock(m_);
  cv_.wait_for(lock, timeout, [&] { return done_ || !pending_.empty(); });
  out += pending_;
  pending_.clear();
  return done_;
}

void Job::delivered() {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (delivered_) return;
    delivered_ = true;
  }
  cv_.notify_all();
}

void Job::push(const std::string& text) {
  if (text.empty()) return;
  if (spec_.stream && !first_pushed_) {
    std::unique_lock<std::mutex> lock(m_);
    first_pushed_ = true;
    pending_ += text;
    const auto t0 = std::chrono::steady_clock::now();
    last_wake_ = t0;
    cv_.notify_all();
    cv_.wait_for(lock, kFirstHandoff, [&] { return delivered_ || cancel_; });
    handoff_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return;
  }
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(m_);
    pending_ += text;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_wake_ >= kWakeEvery) {
      last_wake_ = now;
      wake = true;
    }
  }
  if (wake) cv_.notify_all();
}

void Job::finish(JobResult r) {
  {
    std::lock_guard<std::mutex> lock(m_);
    result_ = std::move(r);
    done_ = true;
  }
  cv_.notify_all();
}

Engine::Engine(LlamaModel& model, const Tokenizer& tok, const EngineOptions& opt)
    : model_(model), tok_(tok), opt_(opt) {
  if (opt_.ctx <= 0) throw Error(fmt::format("context length must be positive (got {})", opt_.ctx));
  if (opt_.max_queue < 0) throw Error(fmt::format("queue length must not be negative (got {})", opt_.max_queue));
  release_openmp_workers();  // the worker's own team is the only one that computes from now on
  std::promise<void> started;
  std::future<void> ok = started.get_future();
  worker_ = std::thread([this, &started] {
    // OpenMP's thread count is a setting of each thread: the worker, which runs the model, sets its own.
    set_threads(opt_.threads);
    threads_ = get_threads();
    try {
      // Buffers for the whole context, once: memory stays the same from request to request and a
      // budget too small is refused now, not on some later request.
      model_.reset(opt_.ctx, opt_.ctx);
    } catch (...) {
      started.set_exception(std::current_exception());
      return;
    }
    started.set_value();
    run();
  });
  try {
    ok.get();
  } catch (...) {
    worker_.join();
    throw;
  }
}

Engine::~Engine() {
  shutdown();
  if (worker_.joinable()) worker_.join();
}

void Engine::shutdown() {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (auto& j : dropped) {
    JobResult r;
    r.finish_reason = "cancelled";
    j->finish(std::move(r));
  }
}

std::shared_ptr<Job> Engine::submit(JobSpec spec) {
  auto job = std::make_shared<Job>();
  job->spec_ = std::move(spec);
  {
    std::lock_guard<std::mutex> lock(m_);
    if (stopping_) throw QueueFull("the server is shutting down");
    if (queue_.size() >= static_cast<size_t>(opt_.max_queue)) {
      ++stats_.refused;
      throw QueueFull(fmt::format("{} requests are already waiting; retry later", queue_.size()));
    }
    queue_.push_back(job);
  }
  cv_.notify_all();
  return job;
}

Engine::Stats Engine::stats() const {
  std::lock_guard<std::mutex> lock(m_);
  Stats s = stats_;
  s.queued = queue_.size();
  s.busy = busy_;
  return s;
}

void Engine::run() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(m_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    process(*job);
    std::lock_guard<std::mutex> lock(m_);
    busy_ = false;
    const JobResult& r = job->result();
    ++(!r.error.empty() ? stats_.failed : r.finish_reason == "cancelled" ? stats_.cancelled : stats_.completed);
  }
}

void Engine::process(Job& job) {
  const JobSpec& spec = job.spec_;
  JobResult res;
  res.prompt_tokens = static_cast<int64_t>(spec.prompt.size());
  if (job.cancelled()) {  // the client left while it waited
    res.finish_reason = "cancelled";
    job.finish(std::move(res));
    return;
  }
  StopMatcher stops(spec.stop);
  // Everything that can go wrong in one request stays in that request: the client gets the
  // message, the worker takes the next job. The model is sized afresh by every generate().
  try {
    if (before_job) before_job(spec);
    GenerateOptions g;
    g.n_new = spec.max_new;
    g.temperature = spec.temperature;
    g.top_p = spec.top_p;
    g.seed = spec.seed;
    g.stop_ids = spec.stop_ids;
    g.ignore_eos = spec.ignore_eos;
    g.echo_prompt = false;
    g.reserve_ctx = opt_.ctx;
    g.cancel = [&] {
      if (stops.stopped() || job.cancelled()) return true;
      std::lock_guard<std::mutex> lock(m_);
      return stopping_;
    };
    const GenerateResult r =
        generate(model_, tok_, spec.prompt, g, [&](const std::string& text) { job.push(stops.feed(text)); });
    job.push(stops.flush());
    res.completion_tokens = static_cast<int64_t>(r.tokens.size());
    res.finish_reason = stops.stopped() || r.stop_reason == "eos" ? "stop" : r.stop_reason;
    res.prompt_seconds = r.prompt_seconds;
    res.decode_seconds = r.decode_seconds;
    res.prompt_tok_per_s = r.prompt_tok_per_s;
    res.decode_tok_per_s = r.decode_tok_per_s;
    res.handoff_seconds = job.handoff_seconds_;
  } catch (const std::bad_alloc&) {
    res.error = "out of memory while generating";
  } catch (const std::exception& e) {
    res.error = e.what();
    if (res.error.empty()) res.error = "generation failed";
  } catch (...) {
    res.error = "generation failed";
  }
  job.finish(std::move(res));
}

}  // namespace lsb::serve
