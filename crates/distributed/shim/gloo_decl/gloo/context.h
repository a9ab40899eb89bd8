// See ../README.md: declarations only; libtorch holds gloo's definitions. ProcessGroupGloo.hpp's
// inline setTimeout names this member; the shim never calls it or builds a Context.
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
