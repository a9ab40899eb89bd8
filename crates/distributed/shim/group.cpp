// The C face of torch.distributed's C++ process groups (docs/distributed.md, "The shim").
// Every function returns NULL on success or a malloc'd message that the caller frees with
// gb_free_error; no C++ exception crosses into Rust. Tensors are tch's `at::Tensor*`, used in
// place.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "group.h"

namespace {

std::vector<at::Tensor> tensors_of(void* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*static_cast<at::Tensor*>(tensors[i]));
  }
  return out;
}

// Launches one collective per tensor (each tensor is its own bucket), then waits for them all,
// so that the buckets' transfers overlap.
template <typename Launch>
void each_then_wait(c10d::Backend& backend, void* const* tensors, size_t n, int64_t timeout_ms,
                    Launch&& launch) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  works.reserve(n);
  for (auto& t : tensors_of(tensors, n)) {
    std::vector<at::Tensor> one{t};
    works.push_back(launch(backend, one));
  }
  for (auto& w : works) {
    w->wait(std::chrono::milliseconds(timeout_ms));
  }
}

}  // namespace

extern "C" {

void gb_free_error(char* error) { std::free(error); }

char* gb_store_new(const char* host, uint16_t port, int is_server, int world, int64_t timeout_ms,
                   gb_store** out) {
  return gb::guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new gb_store{store};
  });
}

void gb_store_free(gb_store* store) { delete store; }

char* gb_store_set(gb_store* store, const char* key, const uint8_t* data, size_t n) {
  return gb::guarded([&] {
    std::vector<uint8_t> value(data, data + n);
    store->store->set(std::string(key), value);
  });
}

char* gb_store_check(gb_store* store, const char* key, int* present) {
  return gb::guarded([&] {
    std::vector<std::string> keys{std::string(key)};
    *present = store->store->check(keys) ? 1 : 0;
  });
}

char* gb_group_new_gloo(gb_store* store, int rank, int world, int64_t timeout_ms,
                        const char* hostname, const char* interface_name, gb_group** out) {
  return gb::guarded([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (interface_name != nullptr && interface_name[0] != '\0') {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(std::string(interface_name)));
    } else if (hostname != nullptr && hostname[0] != '\0') {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(std::string(hostname)));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, world, opts);
    *out = new gb_group{group};
  });
}

void gb_group_free(gb_group* group) { delete group; }

char* gb_all_reduce_sum(gb_group* group, void* const* tensors, size_t n, int64_t timeout_ms) {
  return gb::guarded([&] {
    each_then_wait(*group->backend, tensors, n, timeout_ms,
                   [](c10d::Backend& b, std::vector<at::Tensor>& one) {
                     c10d::AllreduceOptions opts;
                     opts.reduceOp = c10d::ReduceOp::SUM;
                     return b.allreduce(one, opts);
                   });
  });
}

char* gb_broadcast(gb_group* group, void* const* tensors, size_t n, int root,
                   int64_t timeout_ms) {
  return gb::guarded([&] {
    each_then_wait(*group->backend, tensors, n, timeout_ms,
                   [root](c10d::Backend& b, std::vector<at::Tensor>& one) {
                     c10d::BroadcastOptions opts;
                     opts.rootRank = root;
                     opts.rootTensor = 0;
                     return b.broadcast(one, opts);
                   });
  });
}

char* gb_barrier(gb_group* group, int64_t timeout_ms) {
  return gb::guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    group->backend->barrier(opts)->wait(std::chrono::milliseconds(timeout_ms));
  });
}

#ifndef GLASSBOX_NCCL
int gb_has_nccl(void) { return 0; }

char* gb_group_new_nccl(gb_store*, int, int, int64_t, gb_group**) {
  return gb::message(
      "NCCL is not compiled into glassbox-distributed: its build found no CUDA toolkit "
      "(CUDA_HOME) with nccl.h (NCCL_INCLUDE_DIR) beside a CUDA libtorch; rebuild with them, "
      "or train on --device cpu (Gloo)");
}
#endif
}
