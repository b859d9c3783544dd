// The toolkit's library_types.h for the emulated device (emu/): the names
// the math libraries' headers (cublas_api.h, cublasLt.h) take from it.
// cudaDataType_t itself lives in cuda_runtime.h, numbered as the toolkit's.
#pragma once

#include "cuda_runtime.h"

typedef cudaDataType_t cudaDataType;

typedef enum libraryPropertyType_t { MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL } libraryPropertyType;
