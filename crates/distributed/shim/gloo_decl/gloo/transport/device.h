// See ../../README.md: declarations only; libtorch holds gloo's definitions.
#pragma once
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
