// Every launcher of kernels/*.cu, for the CUDA backend's glue: each .cu has
// its own header of the same name (rmsnorm.h for rmsnorm.cu, ...), with the
// forward and backward of its op family side by side; this file only
// includes them all. The contract every launcher follows is stated at the
// top of each header.
#pragma once

#include "attention.h"
#include "attention_tc.h"
#include "convert.h"
#include "dispatch.h"
#include "elementwise.h"
#include "loss_optim.h"
#include "rmsnorm.h"
#include "router.h"
