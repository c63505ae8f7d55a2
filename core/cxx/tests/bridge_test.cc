// The bridge from C++: a C++ host posts to C++ runtime threads through the
// resty_ffi core. Run by tests/bridge.rs (`cargo test -p resty_ffi_cxx`).

#include "resty_ffi_cxx/src/lib.rs.h"

#include <poll.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                   #cond);                                                 \
      ++failures;                                                          \
    }                                                                      \
  } while (0)

// Sizes 0..1021, bytes include NULs.
std::string payload(uint64_t token) {
  std::string s(token * 7 % 1022, '\0');
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = static_cast<char>((token + i) % 251);
  }
  return s;
}

rust::Slice<const uint8_t> bytes(const std::string &s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

std::string text(const rust::Vec<uint8_t> &v) {
  return {reinterpret_cast<const char *>(v.data()), v.size()};
}

// A C++ runtime: echoes every request until the queue is unloaded.
void echo_runtime(size_t tq) {
  for (;;) {
    auto task = resty_ffi::poll_task(tq);
    if (task->finished()) {
      return;
    }
    auto request = task->request();
    resty_ffi::respond(std::move(task), 0, request);
  }
}

bool wait_readable(int fd) {
  pollfd pfd{fd, POLLIN, 0};
  return poll(&pfd, 1, 10000) == 1;
}

// Waits for the eventfd, then drains everything waiting.
std::vector<resty_ffi::Completion> next_answers(const resty_ffi::Sink &sink) {
  std::vector<resty_ffi::Completion> out;
  if (!wait_readable(sink.fd())) {
    std::fprintf(stderr, "no answer within 10 s\n");
    ++failures;
    return out;
  }
  sink.acknowledge();
  const size_t max = 64;
  for (;;) {
    auto batch = sink.drain(max);
    for (auto &c : batch) {
      out.push_back(std::move(c));
    }
    if (batch.size() < max) {
      return out;
    }
  }
}

void round_trips() {
  const uint64_t total = 10000;
  const uint64_t in_flight = 256;
  auto sink = resty_ffi::new_sink();
  auto queue = resty_ffi::new_task_queue(in_flight);
  std::thread runtimes[] = {std::thread(echo_runtime, queue->tq()),
                            std::thread(echo_runtime, queue->tq())};
  std::vector<bool> seen(total, false);
  uint64_t posted = 0;
  uint64_t received = 0;
  while (received < total && failures == 0) {
    while (posted < total && posted - received < in_flight) {
      CHECK(queue->post(*sink, posted, bytes(payload(posted))) ==
            resty_ffi::PostStatus::Ok);
      ++posted;
    }
    for (const auto &c : next_answers(*sink)) {
      CHECK(c.token < total && !seen[c.token]);
      CHECK(c.rc == 0);
      CHECK(text(c.response) == payload(c.token));
      if (c.token < total) {
        seen[c.token] = true;
      }
      ++received;
    }
  }
  CHECK(received == total);
  CHECK(queue->unload());
  for (auto &t : runtimes) {
    t.join();
  }
}

void queue_full() {
  auto sink = resty_ffi::new_sink();
  auto queue = resty_ffi::new_task_queue(4);
  for (uint64_t token = 0; token < 4; ++token) {
    CHECK(queue->post(*sink, token, bytes("x")) == resty_ffi::PostStatus::Ok);
  }
  CHECK(queue->post(*sink, 4, bytes("x")) == resty_ffi::PostStatus::QueueFull);
  CHECK(queue->pending() == 4);
  std::thread runtime(echo_runtime, queue->tq());
  size_t answered = 0;
  while (answered < 4 && failures == 0) {
    answered += next_answers(*sink).size();
  }
  CHECK(answered == 4);
  CHECK(queue->post(*sink, 5, bytes("x")) == resty_ffi::PostStatus::Ok);
  CHECK(next_answers(*sink).size() == 1);
  queue->unload();
  runtime.join();
}

// Tasks posted before unload are answered, then every poll sees the end.
void unload() {
  auto sink = resty_ffi::new_sink();
  auto queue = resty_ffi::new_task_queue(16);
  for (uint64_t token = 0; token < 3; ++token) {
    CHECK(queue->post(*sink, token, bytes(payload(token))) ==
          resty_ffi::PostStatus::Ok);
  }
  CHECK(queue->unload());
  CHECK(!queue->unload());
  CHECK(queue->post(*sink, 3, bytes("late")) ==
        resty_ffi::PostStatus::Finished);
  std::thread runtime(echo_runtime, queue->tq());
  runtime.join();
  CHECK(resty_ffi::poll_task(queue->tq())->finished());
  auto answers = next_answers(*sink);
  CHECK(answers.size() == 3);
  for (const auto &c : answers) {
    CHECK(text(c.response) == payload(c.token));
  }
}

// A cancelled caller gets nothing; a closed sink frees late answers.
void cancel_and_close() {
  auto sink = resty_ffi::new_sink();
  auto queue = resty_ffi::new_task_queue(16);
  CHECK(queue->post(*sink, 1, bytes("gone")) == resty_ffi::PostStatus::Ok);
  CHECK(queue->post(*sink, 2, bytes("kept")) == resty_ffi::PostStatus::Ok);
  sink->cancel(1);
  std::thread runtime(echo_runtime, queue->tq());
  auto answers = next_answers(*sink);
  while (answers.empty() && failures == 0) {
    answers = next_answers(*sink);
  }
  CHECK(answers.size() == 1 && answers[0].token == 2);
  CHECK(text(answers[0].response) == "kept");
  CHECK(queue->post(*sink, 3, bytes("late")) == resty_ffi::PostStatus::Ok);
  sink->close();
  queue->unload();
  runtime.join();
  CHECK(sink->drain(64).empty());
}

}  // namespace

extern "C" int resty_ffi_cxx_bridge_test() {
  round_trips();
  queue_full();
  unload();
  cancel_and_close();
  std::printf("resty_ffi_cxx bridge test: %s\n", failures == 0 ? "ok" : "FAILED");
  return failures;
}
