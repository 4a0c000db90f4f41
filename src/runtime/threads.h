// Thread count for the whole process: every parallel loop uses the OpenMP team.
#pragma once

namespace lsb {
void set_threads(int n);  // n <= 0: all hardware threads
int get_threads();
}  // namespace lsb
