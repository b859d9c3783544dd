// The emulated device's runtime API (emu/): everything is in cuda_runtime.h.
#pragma once
#include "cuda_runtime.h"
