// Declarations shared by group.cpp and nccl.cpp; the Rust side mirrors the C functions in
// src/ffi.rs.
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

struct gb_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct gb_group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

namespace gb {

inline char* message(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, text.c_str(), text.size() + 1);
  }
  return out;
}

// Runs body, turning any exception into a message (NULL when none was thrown).
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception");
  }
}

}  // namespace gb

extern "C" {
void gb_free_error(char* error);
char* gb_store_new(const char* host, uint16_t port, int is_server, int world, int64_t timeout_ms,
                   gb_store** out);
void gb_store_free(gb_store* store);
char* gb_store_set(gb_store* store, const char* key, const uint8_t* data, size_t n);
char* gb_store_check(gb_store* store, const char* key, int* present);
char* gb_group_new_gloo(gb_store* store, int rank, int world, int64_t timeout_ms,
                        const char* hostname, const char* interface_name, gb_group** out);
char* gb_group_new_nccl(gb_store* store, int rank, int world, int64_t timeout_ms,
                        gb_group** out);
void gb_group_free(gb_group* group);
char* gb_all_reduce_sum(gb_group* group, void* const* tensors, size_t n, int64_t timeout_ms);
char* gb_broadcast(gb_group* group, void* const* tensors, size_t n, int root, int64_t timeout_ms);
char* gb_barrier(gb_group* group, int64_t timeout_ms);
int gb_has_nccl(void);
}
