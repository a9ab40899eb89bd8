// See ../README.md: declarations only; libtorch holds gloo's definitions.
#pragma once
#include "gloo/context.h"
