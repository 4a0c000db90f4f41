// Thread count for the whole process: every parallel loop uses the OpenMP team.
#pragma once

namespace lsb {
void set_threads(int n);  // n <= 0: all hardware threads
int get_threads();
// OpenMP workers of libgomp spin up to 300,000 iterations (about 10 ms where `pause` is slow)
// after each parallel region before they sleep. While streaming, the reader and builder threads
// need those cycles: measured on tinyllama-1.1b under --mem-budget 64M, the spinning took half
// of the CPU time. libgomp reads GOMP_SPINCOUNT only when it is loaded, so when argv asks for
// streaming (--mem-budget) and the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT, this
// sets GOMP_SPINCOUNT=10000 and re-executes the program once (returns if that fails).
void bound_openmp_spin_when_streaming(int argc, char** argv);

}  // namespace lsb
