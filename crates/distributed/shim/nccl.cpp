// NCCL process groups; compiled only where libtorch has CUDA and nccl.h is found (build.rs).
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>

#include "group.h"

extern "C" {

int gb_has_nccl(void) { return 1; }

char* gb_group_new_nccl(gb_store* store, int rank, int world, int64_t timeout_ms,
                        gb_group** out) {
  return gb::guarded([&] {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, world, opts);
    *out = new gb_group{group};
  });
}
}
