// Thread count for the whole process: every parallel loop uses the OpenMP team. And the
// process-wide settings a run under --mem-budget needs before its threads start.
#pragma once
#include <cstdint>

namespace lsb {
void set_threads(int n);  // n <= 0: all hardware threads
int get_threads();
// Whether a command line asks for streaming under a memory budget (an argument --mem-budget...).
bool argv_streams(int argc, char** argv);
// OpenMP workers of libgomp spin up to 300,000 iterations (about 10 ms where `pause` is slow)
// after each parallel region before they sleep. While streaming, the reader and builder threads
// need those cycles: measured on tinyllama-1.1b under --mem-budget 64M, the spinning took half
// of the CPU time. libgomp reads GOMP_SPINCOUNT only when it is loaded, so when argv asks for
// streaming (--mem-budget) and the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT, this
// sets GOMP_SPINCOUNT=10000 and re-executes the program once (returns if that fails).
void bound_openmp_spin_when_streaming(int argc, char** argv);

// Ends the OpenMP worker threads that parallel regions run by the calling thread have started
// (they would otherwise sit idle for the life of the process). Call it on a thread that hands the
// computing over to another thread (the server's engine): libgomp shortens its spin before
// sleeping to 1,000 iterations while it manages more threads than there are CPUs, and idle
// workers of another thread count. Measured on bookworm-27m, 2 threads, 2 CPUs: with the main
// thread's idle worker alive, decode ran at about half of lsb bench's speed, a quarter of the
// time in futex sleeps and wake-ups.
void release_openmp_workers();

// Resident stack of any thread started after prepare_process_for_budget(): its stack size.
inline constexpr uint64_t kBudgetThreadStack =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    4ull << 20;  // sanitizers' frames are several times larger
#else
    256ull << 10;  // the deepest thread (the builder parsing a blob) touched 24 KiB, measured
#endif

// Makes the memory that no allocator of lsb sees bounded, before any thread exists (call it
// first thing in main when streaming; docs/STREAMING.md, "What --mem-budget covers"):
//   - every thread started later (the streamer's reader and builder, libgomp's workers unless
//     OMP_STACKSIZE says otherwise) gets a stack of kBudgetThreadStack, not the 8 MiB default;
//   - malloc keeps one arena (M_ARENA_MAX 1) instead of growing a heap per thread, and a fixed
//     mmap threshold of 128 KiB (no dynamic raise), so the large buffers (KV cache, activations,
//     logits) are mapped on allocation and unmapped on release, exactly the bytes counted.
void prepare_process_for_budget();
// Bytes of stack a thread started from now may make resident: the pthread default stack size
// (after prepare_process_for_budget, kBudgetThreadStack), or for libgomp's workers the
// OMP_STACKSIZE / GOMP_STACKSIZE the user set. `openmp_worker` picks which.
uint64_t thread_stack_bound(bool openmp_worker);

}  // namespace lsb
